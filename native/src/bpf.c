/*
 * The eBPF side of the addon, through libbpf: load sluice's TC classifier
 * object, attach it to an interface's clsact hook (ingress or egress), and
 * read and write its maps. Everything runs in the calling process's
 * network namespace; nothing is pinned, so a crashed sluice leaves only the
 * tc filter (removed by `sluice down` / the next start, which own it).
 */
#include "common.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLUICE_TC_HANDLE 0x5c
#define SLUICE_TC_PRIORITY 0x5c

static const char *bpf_hint(int err) {
  switch (err) {
    case EPERM:
      return "needs CAP_BPF and CAP_NET_ADMIN, or root";
    case ENOENT:
      return "no such object file or interface";
    case EINVAL:
      return "the kernel rejected the program or a map (too old a kernel?)";
    case ENOSYS:
      return "this kernel has no eBPF";
    case E2BIG:
      return "the program is too large or complex for this kernel's verifier";
    default:
      return "see the kernel log for the verifier's reason";
  }
}

/*
 * The verifier's reason for refusing a program: libbpf prints the kernel's
 * load log between "-- BEGIN PROG LOAD LOG --" and "-- END PROG LOAD LOG --"
 * when a load fails; its last line that is not a summary ("processed N
 * insns", "verification time", "stack depth") is what the kernel objected
 * to, e.g. "invalid func unknown#124" from a kernel older than the helper
 * (bpf_sk_assign: 5.7) or "BPF program is too large". Kept for the error.
 */
static char verifier_reason[256];

static int is_summary(const char *line, size_t len) {
  static const char *const prefixes[] = {"processed ", "verification time", "stack depth", "max_states", "-- END"};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    size_t n = strlen(prefixes[i]);
    if (len >= n && strncmp(line, prefixes[i], n) == 0) return 1;
  }
  return 0;
}

static int capture_verifier_reason(enum libbpf_print_level level, const char *fmt, va_list ap) {
  if (level == LIBBPF_DEBUG) return 0;
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(NULL, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return 0;
  char *text = malloc((size_t)n + 1);
  if (text == NULL) return 0;
  vsnprintf(text, (size_t)n + 1, fmt, ap);
  const char *begin = strstr(text, "-- BEGIN PROG LOAD LOG --");
  if (begin != NULL) {
    const char *end = strstr(begin, "-- END PROG LOAD LOG --");
    if (end == NULL) end = text + n;
    const char *p = strchr(begin, '\n');
    while (p != NULL && p < end) {
      p++;
      const char *e = memchr(p, '\n', (size_t)(end - p));
      if (e == NULL) e = end;
      size_t len = (size_t)(e - p);
      if (len > 0 && !is_summary(p, len)) {
        if (len >= sizeof verifier_reason) len = sizeof verifier_reason - 1;
        memcpy(verifier_reason, p, len);
        verifier_reason[len] = 0;
      }
      p = e;
    }
  }
  free(text);
  return 0;
}

/* bpfLoad(path) -> { prog: fd, maps: { name: fd, ... } } */
static napi_value bpf_load(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4096];
  if (argc < 1 || !arg_string(env, argv[0], path, sizeof path)) return throw_usage(env, "bpfLoad(objectPath: string)");
  libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
  struct bpf_object *obj = bpf_object__open_file(path, NULL);
  if (obj == NULL) {
    int err = errno;
    return throw_errno(env, "bpf_object__open_file", err, bpf_hint(err));
  }
  verifier_reason[0] = 0;
  libbpf_print_fn_t previous = libbpf_set_print(capture_verifier_reason);
  int err = bpf_object__load(obj);
  libbpf_set_print(previous);
  if (err != 0) {
    bpf_object__close(obj);
    char hint[400];
    if (verifier_reason[0] != 0) snprintf(hint, sizeof hint, "%s; the verifier said: %s", bpf_hint(-err), verifier_reason);
    else snprintf(hint, sizeof hint, "%s", bpf_hint(-err));
    return throw_errno(env, "bpf_object__load", -err, hint);
  }
  napi_value result, maps;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_create_object(env, &maps));
  struct bpf_program *prog = bpf_object__next_program(obj, NULL);
  int prog_fd = prog ? dup(bpf_program__fd(prog)) : -1;
  napi_value v;
  NAPI_CALL(env, napi_create_int32(env, prog_fd, &v));
  NAPI_CALL(env, napi_set_named_property(env, result, "prog", v));
  struct bpf_map *map;
  bpf_object__for_each_map(map, obj) {
    NAPI_CALL(env, napi_create_int32(env, dup(bpf_map__fd(map)), &v));
    NAPI_CALL(env, napi_set_named_property(env, maps, bpf_map__name(map), v));
  }
  NAPI_CALL(env, napi_set_named_property(env, result, "maps", maps));
  /* Closing the object closes its own descriptors; the dups keep the
   * program and maps alive for as long as sluice holds them. */
  bpf_object__close(obj);
  return result;
}

/* bpfTcAttach(ifindex, progFd, ingress) -> createdQdisc: boolean */
static napi_value bpf_tc_attach_js(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t ifindex, prog_fd;
  bool ingress;
  if (argc < 3 || !arg_int32(env, argv[0], &ifindex) || !arg_int32(env, argv[1], &prog_fd) || !arg_bool(env, argv[2], &ingress))
    return throw_usage(env, "bpfTcAttach(ifindex: number, progFd: number, ingress: boolean)");
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS);
  bool created = true;
  int err = bpf_tc_hook_create(&hook);
  if (err == -EEXIST) {
    created = false;
  } else if (err != 0) {
    return throw_errno(env, "bpf_tc_hook_create (clsact)", -err, bpf_hint(-err));
  }
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = SLUICE_TC_HANDLE, .priority = SLUICE_TC_PRIORITY, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE);
  err = bpf_tc_attach(&hook, &opts);
  if (err != 0) return throw_errno(env, "bpf_tc_attach", -err, bpf_hint(-err));
  napi_value r;
  NAPI_CALL(env, napi_get_boolean(env, created, &r));
  return r;
}

/* bpfTcDetach(ifindex, ingress, destroyQdisc): removes sluice's filter; with
 * destroyQdisc also the clsact qdisc (only when sluice created it). */
static napi_value bpf_tc_detach_js(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t ifindex;
  bool ingress, destroy;
  if (argc < 3 || !arg_int32(env, argv[0], &ifindex) || !arg_bool(env, argv[1], &ingress) || !arg_bool(env, argv[2], &destroy))
    return throw_usage(env, "bpfTcDetach(ifindex: number, ingress: boolean, destroyQdisc: boolean)");
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS);
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = SLUICE_TC_HANDLE, .priority = SLUICE_TC_PRIORITY);
  int err = bpf_tc_detach(&hook, &opts);
  if (err != 0 && err != -ENOENT && err != -ENODEV) return throw_errno(env, "bpf_tc_detach", -err, bpf_hint(-err));
  if (destroy) {
    hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
    err = bpf_tc_hook_destroy(&hook);
    if (err != 0 && err != -ENOENT && err != -ENODEV && err != -EINVAL) return throw_errno(env, "bpf_tc_hook_destroy", -err, bpf_hint(-err));
  }
  return NULL;
}

/* bpfMapUpdate(fd, key, value) */
static napi_value bpf_map_update_js(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint8_t *key, *value;
  size_t klen, vlen;
  if (argc < 3 || !arg_int32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &key, &klen) || !arg_bytes(env, argv[2], &value, &vlen))
    return throw_usage(env, "bpfMapUpdate(fd: number, key: Uint8Array, value: Uint8Array)");
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0) return throw_errno(env, "bpf_map_update_elem", errno, bpf_hint(errno));
  return NULL;
}

/* bpfMapDelete(fd, key) -> existed: boolean */
static napi_value bpf_map_delete_js(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint8_t *key;
  size_t klen;
  if (argc < 2 || !arg_int32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &key, &klen))
    return throw_usage(env, "bpfMapDelete(fd: number, key: Uint8Array)");
  bool existed = true;
  if (bpf_map_delete_elem(fd, key) != 0) {
    if (errno != ENOENT) return throw_errno(env, "bpf_map_delete_elem", errno, bpf_hint(errno));
    existed = false;
  }
  napi_value r;
  NAPI_CALL(env, napi_get_boolean(env, existed, &r));
  return r;
}

/* bpfMapLookup(fd, key, valueOut) -> found: boolean (per-CPU maps fill one value per possible CPU) */
static napi_value bpf_map_lookup_js(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint8_t *key, *value;
  size_t klen, vlen;
  if (argc < 3 || !arg_int32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &key, &klen) || !arg_bytes(env, argv[2], &value, &vlen))
    return throw_usage(env, "bpfMapLookup(fd: number, key: Uint8Array, valueOut: Uint8Array)");
  bool found = true;
  if (bpf_map_lookup_elem(fd, key, value) != 0) {
    if (errno != ENOENT) return throw_errno(env, "bpf_map_lookup_elem", errno, bpf_hint(errno));
    found = false;
  }
  napi_value r;
  NAPI_CALL(env, napi_get_boolean(env, found, &r));
  return r;
}

static napi_value bpf_possible_cpus(napi_env env, napi_callback_info info) {
  napi_value r;
  NAPI_CALL(env, napi_create_int32(env, libbpf_num_possible_cpus(), &r));
  return r;
}

napi_value init_bpf(napi_env env, napi_value exports) {
  export_fn(env, exports, "bpfLoad", bpf_load);
  export_fn(env, exports, "bpfTcAttach", bpf_tc_attach_js);
  export_fn(env, exports, "bpfTcDetach", bpf_tc_detach_js);
  export_fn(env, exports, "bpfMapUpdate", bpf_map_update_js);
  export_fn(env, exports, "bpfMapDelete", bpf_map_delete_js);
  export_fn(env, exports, "bpfMapLookup", bpf_map_lookup_js);
  export_fn(env, exports, "bpfPossibleCpus", bpf_possible_cpus);
  return exports;
}
