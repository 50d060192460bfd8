/*
 * Shared declarations of the sluice native addon. Native code does only what
 * Node cannot: open the TUN (TUNSETIFF, TUNSETOFFLOAD), batched non-blocking
 * I/O on its fd, and socket options (SO_MARK, IP_TRANSPARENT,
 * SO_BINDTODEVICE, SO_ORIGINAL_DST), and giving up root (setresuid, capset,
 * prctl) plus sd_notify datagrams, and NETLINK_SOCK_DIAG queries (the owner
 * of a local socket). Everything else is TypeScript.
 */
#ifndef SLUICE_COMMON_H
#define SLUICE_COMMON_H

#include <node_api.h>
#include <stdint.h>
#include <stdbool.h>

/* Throws an Error whose message is "<what>: <ERRNO> (<hint>)", with .code set
 * to the errno name and .errno to its number. Returns NULL for convenience. */
napi_value throw_errno(napi_env env, const char *what, int err, const char *hint);
/* Throws a TypeError with code SLUICE_NATIVE_USAGE. */
napi_value throw_usage(napi_env env, const char *usage);
const char *errno_name(int err);

/* Argument helpers: return false after throwing a usage error. */
bool arg_int32(napi_env env, napi_value v, int32_t *out);
bool arg_uint32(napi_env env, napi_value v, uint32_t *out);
bool arg_bool(napi_env env, napi_value v, bool *out);
/* Copies a JS string into buf (NUL-terminated); false if too long or not a string. */
bool arg_string(napi_env env, napi_value v, char *buf, size_t cap);
/* An options object's property `key` into *out; false when absent or undefined. */
bool arg_opt(napi_env env, napi_value obj, const char *key, napi_value *out);
/* Gets the data pointer and length of an ArrayBuffer, TypedArray or Buffer. */
bool arg_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len);

#define NAPI_CALL(env, call)                                                  \
  do {                                                                        \
    if ((call) != napi_ok) {                                                  \
      const napi_extended_error_info *info__ = NULL;                          \
      napi_get_last_error_info((env), &info__);                               \
      bool pending__ = false;                                                 \
      napi_is_exception_pending((env), &pending__);                           \
      if (!pending__)                                                         \
        napi_throw_error((env), "SLUICE_NATIVE",                              \
                         info__ && info__->error_message ? info__->error_message \
                                                         : "N-API call failed"); \
      return NULL;                                                            \
    }                                                                         \
  } while (0)

napi_value init_tun(napi_env env, napi_value exports);
napi_value init_reader(napi_env env, napi_value exports);
napi_value init_sockets(napi_env env, napi_value exports);
napi_value init_bpf(napi_env env, napi_value exports);
napi_value init_privileges(napi_env env, napi_value exports);
napi_value init_sockdiag(napi_env env, napi_value exports);
napi_value init_icmp(napi_env env, napi_value exports);
/* heap.cc (C++: the V8 API). */
napi_value init_heap(napi_env env, napi_value exports);

/* icmp.c: the reader's 'icmp' kind (records: 20-byte header, then the message). */
int icmp_reader_strip(int fd);
long icmp_reader_recv(int fd, int strip, uint8_t *at, size_t cap);

void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);
void export_int(napi_env env, napi_value exports, const char *name, int64_t value);

#endif
