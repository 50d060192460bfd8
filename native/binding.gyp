{
  "targets": [
    {
      "target_name": "sluice_native",
      "sources": ["src/addon.c", "src/errors.c", "src/tun.c", "src/reader.c", "src/sockets.c", "src/bpf.c", "src/privileges.c", "src/sockdiag.c", "src/icmp.c", "src/heap.cc"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_c": ["-std=gnu11"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-lbpf"]
    }
  ]
}
