/*
 * Opening a TUN device: TUNSETIFF with IFF_TUN | IFF_NO_PI, optionally
 * IFF_VNET_HDR (struct virtio_net_hdr before every packet) with TUNSETOFFLOAD,
 * optionally IFF_MULTI_QUEUE with one fd per queue. Link MTU and up/down go
 * through the classic SIOCSIFMTU / SIOCSIFFLAGS ioctls on a datagram socket.
 * See Documentation/networking/tuntap.rst.
 */
#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

#define MAX_QUEUES 64

static const char *tunsetiff_hint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "needs CAP_NET_ADMIN";
    case EBUSY:
      return "the device is already attached to another process, or exists with other flags";
    case EINVAL:
      return "an existing device has different flags (IFF_MULTI_QUEUE / IFF_VNET_HDR), or the name is invalid";
    case ENOENT:
    case ENODEV:
      return "the tun driver is missing: modprobe tun";
    default:
      return NULL;
  }
}

/* Tries the richest offload set first and degrades: USO needs Linux >= 6.2
 * and both USO flags together; TSO needs CSUM. TSO_ECN stays off so the
 * kernel segments CWR/ECE super-packets itself (as wireguard-go does).
 * Returns the accepted flags, or -errno when even CSUM|TSO4|TSO6 fails. */
static int set_offload(int fd, bool want_uso) {
  unsigned int tries[3] = {
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
      TUN_F_CSUM,
  };
  int err = 0;
  for (int i = want_uso ? 0 : 1; i < 3; i++) {
    if (ioctl(fd, TUNSETOFFLOAD, tries[i]) == 0) return (int)tries[i];
    err = errno;
  }
  return -err;
}

static bool get_opt(napi_env env, napi_value obj, const char *key, napi_value *out) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return false;
  if (napi_get_named_property(env, obj, key, out) != napi_ok) return false;
  napi_valuetype t;
  napi_typeof(env, *out, &t);
  return t != napi_undefined;
}

#define TUN_OPEN_USAGE                                                         \
  "tunOpen(name: string, options?: { vnetHdr?: boolean, offload?: boolean, "   \
  "uso?: boolean, queues?: number (1..64) })"

/* tunOpen(name, options) -> { name, fds, vnetHdr, offloads } */
static napi_value tun_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[IFNAMSIZ];
  if (argc < 1 || !arg_string(env, argv[0], name, sizeof name)) return throw_usage(env, TUN_OPEN_USAGE);
  bool vnet = false, offload = false, uso = true;
  uint32_t queues = 1;
  if (argc >= 2) {
    napi_valuetype t;
    napi_typeof(env, argv[1], &t);
    if (t != napi_undefined) {
      if (t != napi_object) return throw_usage(env, TUN_OPEN_USAGE);
      napi_value v;
      if (get_opt(env, argv[1], "vnetHdr", &v) && !arg_bool(env, v, &vnet)) return throw_usage(env, TUN_OPEN_USAGE);
      if (get_opt(env, argv[1], "offload", &v) && !arg_bool(env, v, &offload)) return throw_usage(env, TUN_OPEN_USAGE);
      if (get_opt(env, argv[1], "uso", &v) && !arg_bool(env, v, &uso)) return throw_usage(env, TUN_OPEN_USAGE);
      if (get_opt(env, argv[1], "queues", &v) && (!arg_uint32(env, v, &queues) || queues < 1 || queues > MAX_QUEUES))
        return throw_usage(env, TUN_OPEN_USAGE);
    }
  }
  if (offload && !vnet) return throw_usage(env, "tunOpen: offload needs vnetHdr: true (segment metadata travels in virtio_net_hdr)");

  int fds[MAX_QUEUES];
  uint32_t opened = 0;
  int offloads = 0;
  struct ifreq ifr;
  for (; opened < queues; opened++) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      int err = errno;
      for (uint32_t i = 0; i < opened; i++) close(fds[i]);
      return throw_errno(env, "open /dev/net/tun", err,
                         err == ENOENT ? "the tun driver is missing: modprobe tun"
                         : (err == EACCES || err == EPERM) ? "needs CAP_NET_ADMIN and access to /dev/net/tun"
                                                           : NULL);
    }
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (vnet) ifr.ifr_flags |= IFF_VNET_HDR;
    if (queues > 1) ifr.ifr_flags |= IFF_MULTI_QUEUE;
    /* Name from the previous queue, so "tun%d" resolves once. */
    memcpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
      int err = errno;
      close(fd);
      for (uint32_t i = 0; i < opened; i++) close(fds[i]);
      return throw_errno(env, "TUNSETIFF", err, tunsetiff_hint(err));
    }
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = '\0';
    if (offload) {
      int r = set_offload(fd, uso);
      if (r < 0) {
        int err = -r;
        close(fd);
        for (uint32_t i = 0; i < opened; i++) close(fds[i]);
        return throw_errno(env, "TUNSETOFFLOAD", err, "the kernel refused checksum offload; retry with offload: false");
      }
      offloads = r;
    }
    fds[opened] = fd;
  }

  napi_value result, fd_array, v;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_create_array_with_length(env, queues, &fd_array));
  for (uint32_t i = 0; i < queues; i++) {
    napi_create_int32(env, fds[i], &v);
    napi_set_element(env, fd_array, i, v);
  }
  napi_set_named_property(env, result, "fds", fd_array);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, result, "name", v);
  napi_get_boolean(env, vnet, &v);
  napi_set_named_property(env, result, "vnetHdr", v);
  napi_create_int32(env, offloads, &v);
  napi_set_named_property(env, result, "offloads", v);
  return result;
}

static int ctl_socket(void) { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); }

/* linkSetMtu(name, mtu) */
static napi_value link_set_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  uint32_t mtu;
  if (argc < 2 || !arg_string(env, argv[0], ifr.ifr_name, IFNAMSIZ) || !arg_uint32(env, argv[1], &mtu) || mtu < 68 ||
      mtu > 65535)
    return throw_usage(env, "linkSetMtu(name: string, mtu: number (68..65535))");
  int s = ctl_socket();
  if (s < 0) return throw_errno(env, "socket", errno, NULL);
  ifr.ifr_mtu = (int)mtu;
  int rc = ioctl(s, SIOCSIFMTU, &ifr);
  int err = errno;
  close(s);
  if (rc < 0)
    return throw_errno(env, "SIOCSIFMTU", err,
                       err == EPERM ? "needs CAP_NET_ADMIN" : err == ENODEV ? "no such interface" : NULL);
  return NULL;
}

/* linkSetUp(name, up) */
static napi_value link_set_up(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  bool up;
  if (argc < 2 || !arg_string(env, argv[0], ifr.ifr_name, IFNAMSIZ) || !arg_bool(env, argv[1], &up))
    return throw_usage(env, "linkSetUp(name: string, up: boolean)");
  int s = ctl_socket();
  if (s < 0) return throw_errno(env, "socket", errno, NULL);
  int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    if (up)
      ifr.ifr_flags |= IFF_UP;
    else
      ifr.ifr_flags &= ~IFF_UP;
    rc = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int err = errno;
  close(s);
  if (rc < 0)
    return throw_errno(env, "SIOCSIFFLAGS", err,
                       err == EPERM ? "needs CAP_NET_ADMIN" : err == ENODEV ? "no such interface" : NULL);
  return NULL;
}

/* linkIndex(name) -> ifindex (0 when absent) */
static napi_value link_index(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[IFNAMSIZ];
  if (argc < 1 || !arg_string(env, argv[0], name, sizeof name)) return throw_usage(env, "linkIndex(name: string)");
  napi_value v;
  napi_create_uint32(env, if_nametoindex(name), &v);
  return v;
}

/* closeFd(fd): closes an fd the addon handed out (TUN queues, raw sockets). */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (argc < 1 || !arg_int32(env, argv[0], &fd) || fd < 0) return throw_usage(env, "closeFd(fd: number)");
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", errno, NULL);
  return NULL;
}

/*
 * tunSetSteering(fd, progFd): TUNSETSTEERINGEBPF (Linux >= 4.16) with a
 * BPF_PROG_TYPE_SOCKET_FILTER program; the kernel then picks the queue of
 * every packet it sends into the TUN as `program's return % numqueues`
 * instead of tun_automq's flow hash. The program belongs to the device (any
 * one queue's fd sets it) and the kernel holds its own reference, so the
 * caller may close progFd afterwards. progFd -1 detaches.
 */
static napi_value tun_set_steering(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, prog_fd;
  if (argc < 2 || !arg_int32(env, argv[0], &fd) || !arg_int32(env, argv[1], &prog_fd) || fd < 0 || prog_fd < -1)
    return throw_usage(env, "tunSetSteering(fd: number, progFd: number (-1 detaches))");
  int v = prog_fd;
  if (ioctl(fd, TUNSETSTEERINGEBPF, &v) < 0) {
    int err = errno;
    return throw_errno(env, "TUNSETSTEERINGEBPF", err,
                       err == EINVAL || err == ENOTTY ? "this kernel has no TUN steering programs (Linux >= 4.16) or the program is not a socket filter"
                       : err == EBADF                 ? "not a TUN queue fd or not a BPF program fd"
                       : err == EPERM                 ? "needs CAP_NET_ADMIN"
                                                      : NULL);
  }
  return NULL;
}

napi_value init_tun(napi_env env, napi_value exports) {
  export_fn(env, exports, "tunSetSteering", tun_set_steering);
  export_fn(env, exports, "tunOpen", tun_open);
  export_fn(env, exports, "linkSetMtu", link_set_mtu);
  export_fn(env, exports, "linkSetUp", link_set_up);
  export_fn(env, exports, "linkIndex", link_index);
  export_fn(env, exports, "closeFd", close_fd);
  export_int(env, exports, "TUN_F_CSUM", TUN_F_CSUM);
  export_int(env, exports, "TUN_F_TSO4", TUN_F_TSO4);
  export_int(env, exports, "TUN_F_TSO6", TUN_F_TSO6);
  export_int(env, exports, "TUN_F_USO4", TUN_F_USO4);
  export_int(env, exports, "TUN_F_USO6", TUN_F_USO6);
  return exports;
}
