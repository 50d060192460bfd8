/*
 * ICMP echo sockets for forwarded pings (src/link/icmp-socket.ts): Node has
 * no ICMP sockets. One socket per family and route mark carries every
 * forwarded echo request; the reader (reader.c, kind 'icmp') hands JS each
 * message the kernel gives it with its source address.
 *
 * Two kinds, tried in this order:
 *  - SOCK_RAW (needs CAP_NET_RAW, which root has): sees echo replies and the
 *    ICMP errors (time exceeded, unreachable, too big) routers send about
 *    our requests as ordinary ICMP messages, so traceroute -I works. The
 *    kernel's ICMP_FILTER / ICMP6_FILTER keeps every other type out. The
 *    identifier is ours to choose (the caller's).
 *  - SOCK_DGRAM "ping sockets" (no privilege, but net.ipv4.ping_group_range
 *    must hold our group; the default "1 0" allows nobody): the kernel sets
 *    the identifier (read back with getsockname) and delivers only our
 *    replies. ICMP errors about our requests would need IP_RECVERR, whose
 *    error queue makes poll() report POLLERR, which libuv's uv_poll treats
 *    as a dead fd; so errors are not read there and such hops time out.
 */
#include "common.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/ip_icmp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Record header the reader writes before each message:
 *   [u8 family 4|6][u8 0][u16 0][16 source address (IPv4 in the first 4)]
 * then the ICMP message (for raw IPv4, the IP header is stripped). */
#define ICMP_RECORD_HEADER 20

/* <linux/icmp.h> clashes with <net/if.h>; its raw-socket filter is this. */
#ifndef ICMP_FILTER
#define ICMP_FILTER 1
#endif
struct sluice_icmp_filter {
  uint32_t data;
};

static const char *icmp_hint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "raw ICMP needs CAP_NET_RAW; ping sockets need the group in net.ipv4.ping_group_range; SO_MARK needs CAP_NET_ADMIN";
    case ENODEV:
      return "no such interface";
    default:
      return NULL;
  }
}

static int open_kind(int family, bool raw) {
  int proto = family == 6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
  return socket(family == 6 ? AF_INET6 : AF_INET, (raw ? SOCK_RAW : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
}

static int set_filters(int fd, int family) {
  if (family == 4) {
    /* ICMP_FILTER: a set bit drops that type. Pass echo reply and the errors. */
    struct sluice_icmp_filter f;
    f.data = ~((1U << ICMP_ECHOREPLY) | (1U << ICMP_UNREACH) | (1U << ICMP_TIMXCEED) | (1U << ICMP_PARAMPROB));
    return setsockopt(fd, SOL_RAW, ICMP_FILTER, &f, sizeof f);
  }
  struct icmp6_filter f;
  ICMP6_FILTER_SETBLOCKALL(&f);
  ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f);
  ICMP6_FILTER_SETPASS(ICMP6_DST_UNREACH, &f);
  ICMP6_FILTER_SETPASS(ICMP6_PACKET_TOO_BIG, &f);
  ICMP6_FILTER_SETPASS(ICMP6_TIME_EXCEEDED, &f);
  ICMP6_FILTER_SETPASS(ICMP6_PARAM_PROB, &f);
  return setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f);
}

#define OPEN_USAGE "icmpOpen({ family: 4 | 6, mark?: number, device?: string, ident: number, kind?: 'auto' | 'raw' | 'dgram' })"

/* icmpOpen(options) -> { fd, ident, raw } */
static napi_value icmp_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], v;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object)
    return throw_usage(env, OPEN_USAGE);
  uint32_t family = 4, mark = 0, ident = 0;
  char device[IFNAMSIZ] = "", kind[8] = "auto";
  if (!arg_opt(env, argv[0], "family", &v) || !arg_uint32(env, v, &family) || (family != 4 && family != 6)) return throw_usage(env, OPEN_USAGE);
  if (arg_opt(env, argv[0], "mark", &v) && !arg_uint32(env, v, &mark)) return throw_usage(env, OPEN_USAGE);
  if (!arg_opt(env, argv[0], "ident", &v) || !arg_uint32(env, v, &ident) || ident > 0xffff) return throw_usage(env, OPEN_USAGE);
  if (arg_opt(env, argv[0], "device", &v) && !arg_string(env, v, device, sizeof device)) return throw_usage(env, OPEN_USAGE);
  if (arg_opt(env, argv[0], "kind", &v) && (!arg_string(env, v, kind, sizeof kind) || (strcmp(kind, "auto") && strcmp(kind, "raw") && strcmp(kind, "dgram"))))
    return throw_usage(env, OPEN_USAGE);
  bool raw = strcmp(kind, "dgram") != 0;
  int fd = open_kind((int)family, raw);
  if (fd < 0 && raw && strcmp(kind, "auto") == 0 && (errno == EPERM || errno == EACCES)) {
    raw = false;
    fd = open_kind((int)family, false);
  }
  if (fd < 0) return throw_errno(env, raw ? "socket SOCK_RAW ICMP" : "socket SOCK_DGRAM ICMP", errno, icmp_hint(errno));
  const char *what = NULL;
  int err = 0;
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    what = "setsockopt SO_MARK";
  } else if (device[0] != '\0' && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, (socklen_t)strlen(device)) < 0) {
    what = "setsockopt SO_BINDTODEVICE";
  } else if (raw && set_filters(fd, (int)family) < 0) {
    what = "setsockopt ICMP_FILTER";
  } else if (!raw) {
    /* A ping socket's identifier is its "port": bind to 0, read it back. */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == 6) {
      ((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
      len = sizeof(struct sockaddr_in6);
    } else {
      ((struct sockaddr_in *)&ss)->sin_family = AF_INET;
      len = sizeof(struct sockaddr_in);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
      what = "bind ICMP";
    } else {
      len = sizeof ss;
      if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) what = "getsockname";
      else ident = ntohs(family == 6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    }
  }
  if (what != NULL) {
    err = errno;
    close(fd);
    return throw_errno(env, what, err, icmp_hint(err));
  }
  napi_value obj;
  napi_create_object(env, &obj);
  napi_create_int32(env, fd, &v);
  napi_set_named_property(env, obj, "fd", v);
  napi_create_uint32(env, ident, &v);
  napi_set_named_property(env, obj, "ident", v);
  napi_get_boolean(env, raw, &v);
  napi_set_named_property(env, obj, "raw", v);
  return obj;
}

/* icmpSend(fd, family, dst, dstOff, msg, msgOff, msgLen, ttl) -> 0 or the
 * errno (positive): one ICMP message to dst (4 or 16 bytes at dstOff) with
 * this TTL / hop limit (IP_TTL / IPV6_HOPLIMIT ancillary data, so each
 * message carries its own without a setsockopt per packet). */
static napi_value icmp_send(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  int32_t fd;
  uint32_t family, dst_off, msg_off, msg_len, ttl;
  uint8_t *dst, *msg;
  size_t dst_cap, msg_cap;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 8 || !arg_int32(env, argv[0], &fd) ||
      !arg_uint32(env, argv[1], &family) || !arg_bytes(env, argv[2], &dst, &dst_cap) || !arg_uint32(env, argv[3], &dst_off) ||
      !arg_bytes(env, argv[4], &msg, &msg_cap) || !arg_uint32(env, argv[5], &msg_off) || !arg_uint32(env, argv[6], &msg_len) ||
      !arg_uint32(env, argv[7], &ttl) || ttl > 255 || (family != 4 && family != 6) ||
      dst_off + (family == 6 ? 16u : 4u) > dst_cap || msg_off > msg_cap || msg_len > msg_cap - msg_off)
    return throw_usage(env, "icmpSend(fd, family: 4 | 6, dst: Uint8Array, dstOff, msg: Uint8Array, msgOff, msgLen, ttl: 1..255)");
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t slen;
  union {
    struct cmsghdr align;
    uint8_t buf[CMSG_SPACE(sizeof(int))];
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = msg + msg_off, .iov_len = msg_len};
  struct msghdr m = {.msg_name = &ss, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_len = CMSG_LEN(sizeof(int));
  int hops = (int)ttl;
  if (family == 6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    memcpy(&a->sin6_addr, dst + dst_off, 16);
    slen = sizeof *a;
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_HOPLIMIT;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    memcpy(&a->sin_addr, dst + dst_off, 4);
    slen = sizeof *a;
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_TTL;
  }
  memcpy(CMSG_DATA(c), &hops, sizeof hops);
  m.msg_namelen = slen;
  ssize_t n;
  do {
    n = sendmsg(fd, &m, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  napi_value v;
  napi_create_uint32(env, n < 0 ? (uint32_t)errno : 0, &v);
  return v;
}

/* The reader's 'icmp' kind: whether records from this fd start with an IPv4
 * header to strip (a raw IPv4 ICMP socket). */
int icmp_reader_strip(int fd) {
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return 0;
  len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return 0;
  return type == SOCK_RAW && domain == AF_INET;
}

/* One message into `at` (after the record's length word): the record
 * header, then the ICMP message; returns the record's byte count or -errno. */
long icmp_reader_recv(int fd, int strip, uint8_t *at, size_t cap) {
  struct sockaddr_storage src;
  struct iovec iov = {.iov_base = at + ICMP_RECORD_HEADER, .iov_len = cap - ICMP_RECORD_HEADER};
  struct msghdr msg = {.msg_name = &src, .msg_namelen = sizeof src, .msg_iov = &iov, .msg_iovlen = 1};
  ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
  if (n < 0) return -errno;
  memset(at, 0, ICMP_RECORD_HEADER);
  if (src.ss_family == AF_INET6) {
    at[0] = 6;
    memcpy(at + 4, &((struct sockaddr_in6 *)&src)->sin6_addr, 16);
  } else {
    at[0] = 4;
    memcpy(at + 4, &((struct sockaddr_in *)&src)->sin_addr, 4);
  }
  uint8_t *body = at + ICMP_RECORD_HEADER;
  if (strip && n >= 20) {
    size_t ihl = (size_t)(body[0] & 0x0f) * 4;
    if (ihl < 20 || (ssize_t)ihl > n) {
      at[0] = 0; /* malformed: JS drops family 0 */
      return ICMP_RECORD_HEADER;
    }
    memmove(body, body + ihl, (size_t)n - ihl);
    n -= (ssize_t)ihl;
  }
  return (long)(ICMP_RECORD_HEADER + n);
}

/* pathMtu(family, address, mark, device) -> the kernel's path MTU toward
 * address (IP_MTU / IPV6_MTU of a connected UDP socket with the route mark:
 * the route's MTU, lowered by what routers' "fragmentation needed" / "packet
 * too big" taught it), or 0 when there is no route. */
static napi_value path_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  uint32_t family, mark;
  char address[INET6_ADDRSTRLEN], device[IFNAMSIZ] = "";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || !arg_uint32(env, argv[0], &family) || (family != 4 && family != 6) ||
      !arg_string(env, argv[1], address, sizeof address) || !arg_uint32(env, argv[2], &mark))
    return throw_usage(env, "pathMtu(family: 4 | 6, address: string, mark: number, device: string)");
  napi_valuetype t;
  napi_typeof(env, argv[3], &t);
  if (t == napi_string && !arg_string(env, argv[3], device, sizeof device)) return throw_usage(env, "pathMtu: device is an interface name");
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len;
  if (family == 6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(9);
    len = sizeof *a;
    if (inet_pton(AF_INET6, address, &a->sin6_addr) != 1) return throw_usage(env, "pathMtu: address is not an IPv6 address");
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(9);
    len = sizeof *a;
    if (inet_pton(AF_INET, address, &a->sin_addr) != 1) return throw_usage(env, "pathMtu: address is not an IPv4 address");
  }
  uint32_t mtu = 0;
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    if (mark != 0) setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark);
    if (device[0] != '\0') setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, (socklen_t)strlen(device));
    int v = 0;
    socklen_t vl = sizeof v;
    if (connect(fd, (struct sockaddr *)&ss, len) == 0 &&
        getsockopt(fd, family == 6 ? IPPROTO_IPV6 : IPPROTO_IP, family == 6 ? IPV6_MTU : IP_MTU, &v, &vl) == 0 && v > 0)
      mtu = (uint32_t)v;
    close(fd);
  }
  napi_value out;
  napi_create_uint32(env, mtu, &out);
  return out;
}

napi_value init_icmp(napi_env env, napi_value exports) {
  export_fn(env, exports, "pathMtu", path_mtu);
  export_fn(env, exports, "icmpOpen", icmp_open);
  export_fn(env, exports, "icmpSend", icmp_send);
  return exports;
}
