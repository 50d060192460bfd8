/*
 * The owner of a local socket by its exact 4-tuple, through NETLINK_SOCK_DIAG
 * (sock_diag(7), inet_diag): one SOCK_DIAG_BY_FAMILY request without
 * NLM_F_DUMP, answered by the kernel's inet_diag_find_one_icsk (TCP) or
 * udp_dump_one (UDP) with one inet_diag_msg carrying idiag_uid (the
 * creator's fsuid) and idiag_inode (the socket's inode, which /proc/PID/fd
 * shows as "socket:[INODE]"). Node has no netlink sockets, hence native.
 *
 * Tuple orientation: for TCP, id.idiag_src/sport is the socket's local end
 * and idiag_dst/dport its remote (inet_lookup(..., dst, dport, src, sport)).
 * udp_dump_one passes them to __udp4_lib_lookup / __udp6_lib_lookup the
 * other way round ("src and dst are swapped for historical reasons" in
 * net/ipv4/udp_diag.c), and that lookup is the receive-path one, so an
 * unconnected or wildcard-bound UDP socket is found too.
 *
 * Synchronous: the kernel answers inside sendmsg, so recv does not wait; a
 * 200 ms SO_RCVTIMEO bounds the pathological case. Needs no privilege.
 */
#include "common.h"
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct diag_request {
  struct nlmsghdr nlh;
  struct inet_diag_req_v2 req;
};

/* One query; 1 found (uid, inode set), 0 no such socket, -errno on failure. */
static int diag_one(int protocol, int family, const uint8_t *local, uint16_t lport, const uint8_t *remote, uint16_t rport,
                    uint32_t *uid, uint32_t *inode) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return -errno;
  struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  struct diag_request r;
  memset(&r, 0, sizeof r);
  r.nlh.nlmsg_len = sizeof r;
  r.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  r.nlh.nlmsg_flags = NLM_F_REQUEST;
  r.nlh.nlmsg_seq = 1;
  r.req.sdiag_family = family == 6 ? AF_INET6 : AF_INET;
  r.req.sdiag_protocol = protocol;
  r.req.idiag_states = ~0U;
  r.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  r.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  size_t alen = family == 6 ? 16 : 4;
  const uint8_t *src = local, *dst = remote;
  uint16_t sport = lport, dport = rport;
  if (protocol == IPPROTO_UDP) {
    src = remote;
    dst = local;
    sport = rport;
    dport = lport;
  }
  memcpy(r.req.id.idiag_src, src, alen);
  memcpy(r.req.id.idiag_dst, dst, alen);
  r.req.id.idiag_sport = htons(sport);
  r.req.id.idiag_dport = htons(dport);

  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(fd, &r, sizeof r, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  /* Reply: one SOCK_DIAG_BY_FAMILY message, or NLMSG_ERROR (ENOENT: no such socket). */
  uint8_t buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  int e = errno;
  close(fd);
  if (n < 0) return -e;
  for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
    if (h->nlmsg_type == NLMSG_ERROR) {
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EPROTO;
      int err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
      return err == ENOENT || err == 0 ? 0 : -err;
    }
    if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
      const struct inet_diag_msg *m = NLMSG_DATA(h);
      *uid = m->idiag_uid;
      *inode = m->idiag_inode;
      return 1;
    }
  }
  return 0;
}

/* socketOwner(protocol: 'tcp'|'udp', family: 4|6, local: bytes, localPort, remote: bytes, remotePort) -> { uid, inode } | null */
static napi_value socket_owner(napi_env env, napi_callback_info info) {
  static const char *usage =
      "socketOwner(protocol: 'tcp' | 'udp', family: 4 | 6, local: Uint8Array (4 or 16 bytes), localPort: number, remote: Uint8Array, remotePort: number)";
  size_t argc = 6;
  napi_value argv[6];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return throw_usage(env, usage);
  char proto[4];
  int32_t family;
  uint32_t lport, rport;
  uint8_t *local, *remote;
  size_t llen, rlen;
  if (!arg_string(env, argv[0], proto, sizeof proto) || !arg_int32(env, argv[1], &family) || !arg_bytes(env, argv[2], &local, &llen) ||
      !arg_uint32(env, argv[3], &lport) || !arg_bytes(env, argv[4], &remote, &rlen) || !arg_uint32(env, argv[5], &rport))
    return throw_usage(env, usage);
  int protocol = strcmp(proto, "tcp") == 0 ? IPPROTO_TCP : strcmp(proto, "udp") == 0 ? IPPROTO_UDP : -1;
  size_t alen = family == 6 ? 16 : 4;
  if (protocol < 0 || (family != 4 && family != 6) || llen != alen || rlen != alen || lport > 65535 || rport > 65535)
    return throw_usage(env, usage);
  uint32_t uid = 0, inode = 0;
  int rc = diag_one(protocol, family, local, (uint16_t)lport, remote, (uint16_t)rport, &uid, &inode);
  if (rc < 0) {
    const char *hint = -rc == EPROTONOSUPPORT || -rc == ENOENT ? "the kernel lacks inet_diag (CONFIG_INET_DIAG, module inet_diag / udp_diag)" : NULL;
    return throw_errno(env, "sock_diag SOCK_DIAG_BY_FAMILY", -rc, hint);
  }
  napi_value out;
  if (rc == 0) {
    NAPI_CALL(env, napi_get_null(env, &out));
    return out;
  }
  napi_value v;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_create_uint32(env, uid, &v));
  NAPI_CALL(env, napi_set_named_property(env, out, "uid", v));
  NAPI_CALL(env, napi_create_uint32(env, inode, &v));
  NAPI_CALL(env, napi_set_named_property(env, out, "inode", v));
  return out;
}

napi_value init_sockdiag(napi_env env, napi_value exports) {
  export_fn(env, exports, "socketOwner", socket_owner);
  return exports;
}
