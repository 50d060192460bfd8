/* Module entry: registers the TUN, batch reader/writer and socket helpers,
 * the privilege drop and sd_notify, the socket-owner lookup and the ICMP
 * echo sockets, and the heap reducer's call into V8 (heap.cc). */
#include "common.h"

static napi_value init(napi_env env, napi_value exports) {
  if (init_tun(env, exports) == NULL) return NULL;
  if (init_reader(env, exports) == NULL) return NULL;
  if (init_sockets(env, exports) == NULL) return NULL;
  if (init_bpf(env, exports) == NULL) return NULL;
  if (init_privileges(env, exports) == NULL) return NULL;
  if (init_sockdiag(env, exports) == NULL) return NULL;
  if (init_icmp(env, exports) == NULL) return NULL;
  if (init_heap(env, exports) == NULL) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
