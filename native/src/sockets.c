/*
 * Socket options Node lacks, applied to fds that net.Server / net.Socket /
 * dgram then adopt: SO_MARK (policy routing keeps our own traffic out of the
 * TUN), IP_TRANSPARENT / IPV6_TRANSPARENT (TPROXY listeners, ip(7)),
 * SO_BINDTODEVICE, and SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST (the pre-NAT
 * destination of a REDIRECTed connection, from conntrack).
 */
#include "common.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IP_RECVORIGDSTADDR
#define IP_RECVORIGDSTADDR 20
#endif
#ifndef IPV6_RECVORIGDSTADDR
#define IPV6_RECVORIGDSTADDR 74
#endif

static const char *sockopt_hint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "needs CAP_NET_ADMIN (or CAP_NET_RAW for IP_TRANSPARENT)";
    case EBADF:
      return "not an open fd";
    case ENOTSOCK:
      return "the fd is not a socket";
    case ENODEV:
      return "no such interface";
    case ENOPROTOOPT:
      return "option not supported for this socket family";
    case ENOENT:
      return "no conntrack entry: the connection was not redirected by netfilter";
    default:
      return NULL;
  }
}

static bool get_int_arg(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  return argc >= want;
}

/* setMark(fd, mark) */
static napi_value set_mark(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  uint32_t mark;
  if (!get_int_arg(env, info, 2, argv) || !arg_int32(env, argv[0], &fd) || !arg_uint32(env, argv[1], &mark))
    return throw_usage(env, "setMark(fd: number, mark: number (uint32))");
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0)
    return throw_errno(env, "setsockopt SO_MARK", errno, sockopt_hint(errno));
  return NULL;
}

static int family_of(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
  return ss.ss_family;
}

static int apply_transparent(int fd, int family) {
  int one = 1;
  if (family == AF_INET6) {
    if (setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one) < 0) return errno;
    /* Dual-stack v6 sockets also accept v4-mapped traffic; set both. */
    setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
    return 0;
  }
  if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) < 0) return errno;
  return 0;
}

static napi_value sockaddr_to_js(napi_env env, const struct sockaddr_storage *ss) {
  char text[INET6_ADDRSTRLEN];
  uint16_t port;
  int family;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    port = ntohs(sin->sin_port);
    family = 4;
  } else {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    port = ntohs(sin6->sin6_port);
    family = 6;
  }
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "address", v);
  napi_create_uint32(env, port, &v);
  napi_set_named_property(env, obj, "port", v);
  napi_create_uint32(env, (uint32_t)family, &v);
  napi_set_named_property(env, obj, "family", v);
  return obj;
}

/* getOriginalDst(fd) -> { address, port, family } */
static napi_value get_original_dst(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_int_arg(env, info, 1, argv) || !arg_int32(env, argv[0], &fd)) return throw_usage(env, "getOriginalDst(fd: number)");
  int family = family_of(fd);
  if (family < 0) return throw_errno(env, "getsockname", -family, sockopt_hint(-family));
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len = sizeof ss;
  int rc;
  if (family == AF_INET6)
    rc = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len);
  else
    rc = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
  if (rc < 0) return throw_errno(env, "getsockopt SO_ORIGINAL_DST", errno, sockopt_hint(errno));
  return sockaddr_to_js(env, &ss);
}

static bool parse_address(const char *text, uint16_t port, int family, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  if (family == 6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    *len = sizeof *sin6;
    return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1;
  }
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  *len = sizeof *sin;
  return inet_pton(AF_INET, text, &sin->sin_addr) == 1;
}

#define CREATE_USAGE                                                                            \
  "createSocket({ family: 4 | 6, type: 'tcp' | 'udp', mark?: number, transparent?: boolean, "   \
  "device?: string, reuseAddr?: boolean, recvOrigDst?: boolean, bind?: { address: string, port: number }, " \
  "listen?: number })"

/* createSocket(options) -> fd: a non-blocking socket with the options set,
 * bound and listening if asked, for net.Server.listen({ fd }),
 * new net.Socket({ fd }) or dgram bind({ fd }). */
static napi_value create_socket(napi_env env, napi_callback_info info) {
  napi_value argv[1], v;
  napi_valuetype t;
  if (!get_int_arg(env, info, 1, argv) || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object)
    return throw_usage(env, CREATE_USAGE);
  uint32_t family = 4, mark = 0, backlog = 0;
  bool has_mark = false, transparent = false, reuse = false, orig = false, listen_ = false;
  char type[8] = "tcp", device[IFNAMSIZ] = "", address[INET6_ADDRSTRLEN] = "";
  uint32_t port = 0;
  bool has_bind = false;
  if (arg_opt(env, argv[0], "family", &v) && (!arg_uint32(env, v, &family) || (family != 4 && family != 6)))
    return throw_usage(env, CREATE_USAGE);
  if (arg_opt(env, argv[0], "type", &v) && (!arg_string(env, v, type, sizeof type) || (strcmp(type, "tcp") && strcmp(type, "udp"))))
    return throw_usage(env, CREATE_USAGE);
  if (arg_opt(env, argv[0], "mark", &v)) {
    if (!arg_uint32(env, v, &mark)) return throw_usage(env, CREATE_USAGE);
    has_mark = true;
  }
  if (arg_opt(env, argv[0], "transparent", &v) && !arg_bool(env, v, &transparent)) return throw_usage(env, CREATE_USAGE);
  if (arg_opt(env, argv[0], "reuseAddr", &v) && !arg_bool(env, v, &reuse)) return throw_usage(env, CREATE_USAGE);
  if (arg_opt(env, argv[0], "recvOrigDst", &v) && !arg_bool(env, v, &orig)) return throw_usage(env, CREATE_USAGE);
  if (arg_opt(env, argv[0], "device", &v) && !arg_string(env, v, device, sizeof device)) return throw_usage(env, CREATE_USAGE);
  if (arg_opt(env, argv[0], "listen", &v)) {
    if (!arg_uint32(env, v, &backlog)) return throw_usage(env, CREATE_USAGE);
    listen_ = true;
  }
  if (arg_opt(env, argv[0], "bind", &v)) {
    napi_value a, p;
    if (!arg_opt(env, v, "address", &a) || !arg_string(env, a, address, sizeof address) || !arg_opt(env, v, "port", &p) ||
        !arg_uint32(env, p, &port) || port > 65535)
      return throw_usage(env, CREATE_USAGE);
    has_bind = true;
  }
  bool udp = strcmp(type, "udp") == 0;
  if (listen_ && (udp || !has_bind)) return throw_usage(env, "createSocket: listen needs type 'tcp' and bind");

  int fd = socket(family == 6 ? AF_INET6 : AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno, NULL);
  int one = 1, err = 0;
  const char *what = NULL;
  if (has_mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    err = errno;
    what = "setsockopt SO_MARK";
  } else if (transparent && (err = apply_transparent(fd, family == 6 ? AF_INET6 : AF_INET)) != 0) {
    what = "setsockopt IP_TRANSPARENT";
  } else if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
    err = errno;
    what = "setsockopt SO_REUSEADDR";
  } else if (orig && udp &&
             /* A dual-stack IPv6 socket also takes IPv4 (mapped): ask for both. */
             (family == 6 ? (setsockopt(fd, SOL_IPV6, IPV6_RECVORIGDSTADDR, &one, sizeof one) < 0 ||
                             setsockopt(fd, SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof one) < 0)
                          : setsockopt(fd, SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof one) < 0)) {
    err = errno;
    what = "setsockopt IP_RECVORIGDSTADDR";
  } else if (device[0] != '\0' && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, (socklen_t)strlen(device)) < 0) {
    err = errno;
    what = "setsockopt SO_BINDTODEVICE";
  } else if (has_bind) {
    struct sockaddr_storage ss;
    socklen_t len;
    if (!parse_address(address, (uint16_t)port, (int)family, &ss, &len)) {
      close(fd);
      return throw_usage(env, "createSocket: bind.address is not a valid address of the given family");
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
      err = errno;
      what = "bind";
    } else if (listen_ && listen(fd, backlog ? (int)backlog : 511) < 0) {
      err = errno;
      what = "listen";
    }
  }
  if (what != NULL) {
    close(fd);
    return throw_errno(env, what, err, err == EADDRINUSE ? "address already in use" : sockopt_hint(err));
  }
  napi_create_int32(env, fd, &v);
  return v;
}

napi_value init_sockets(napi_env env, napi_value exports) {
  export_fn(env, exports, "setMark", set_mark);
  export_fn(env, exports, "getOriginalDst", get_original_dst);
  export_fn(env, exports, "createSocket", create_socket);
  return exports;
}
