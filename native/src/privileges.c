/*
 * Giving up root once sluice has set up (src/system/privileges.ts decides
 * what and when), the user and group lookups it needs, and sd_notify(3)
 * readiness datagrams (Node's dgram has no AF_UNIX datagram sockets).
 *
 * Threads. Linux credentials belong to each thread, not to the process:
 * the raw setresuid/setresgid/setgroups system calls change only the calling
 * thread. glibc's wrappers broadcast the change to every thread of the
 * process (the "setxid" signal dance in nptl), so we call the wrappers, never
 * syscall(): the libuv threadpool and V8's platform threads end up with the
 * same uid/gid/groups as the main thread. src/system/privileges.ts checks
 * this in /proc/self/task/ * /status afterwards.
 *
 * Capabilities are per thread too, and nothing broadcasts capset(2) (libcap's
 * cap_set_proc is per thread as well). What happens to each thread:
 *   - this (the main JS) thread set PR_SET_KEEPCAPS, so the uid change keeps
 *     its permitted set and clears its effective set (capabilities(7),
 *     "Effect of user ID changes on capabilities"); the capset below then
 *     sets permitted = effective = inheritable = the kept set, and the kept
 *     set is raised in the ambient set;
 *   - every other thread existing now did not set KEEPCAPS (securebits are
 *     per-thread credentials too), so the broadcast uid change clears its
 *     permitted, effective and ambient sets entirely: those threads end with
 *     no capabilities, which is fewer than the kept set, never more;
 *   - threads created later are cloned from the main thread's credentials.
 * That is enough, because every operation that needs a capability after the
 * drop runs on the main thread: setsockopt(SO_MARK, IP_TRANSPARENT,
 * SO_BINDTODEVICE) on new upstream sockets happens in the event loop; the
 * forwarding sysctls are written with writeFileSync (on the calling thread,
 * not the threadpool); and the `ip`, `nft` and `tc` children that teardown
 * runs are forked from the main thread by uv_spawn, inheriting its ambient
 * set through execve (capabilities(7): P'(ambient) = P(ambient) for a binary
 * without file capabilities, and P'(permitted) = P'(effective) include it).
 * The threadpool does file I/O and getaddrinfo, which need none.
 *
 * The bounding set is also cut down to the kept set (PR_CAPBSET_DROP, while
 * we still hold CAP_SETPCAP), and PR_SET_NO_NEW_PRIVS is set last: no
 * execve can ever gain privileges again (setuid binaries, file caps). Both
 * are per thread as well and inherited by children and new threads, which
 * is what matters: the children are forked from this thread. The threads
 * that already exist keep NoNewPrivs 0 and the old bounding set in /proc;
 * with empty permitted and ambient sets and no execve of their own, that
 * grants them nothing (forcing NO_NEW_PRIVS onto them would take a seccomp
 * filter installed with SECCOMP_FILTER_FLAG_TSYNC, not worth its cost).
 */
#define _GNU_SOURCE /* setresuid, setresgid */
#include "common.h"
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* The most groups we accept (a bound; the kernel's NGROUPS_MAX is 65536). */
#define MAX_GROUPS 64

static napi_value make_u32(napi_env env, uint32_t v) {
  napi_value out;
  napi_create_uint32(env, v, &out);
  return out;
}

static napi_value make_str(napi_env env, const char *s) {
  napi_value out;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &out);
  return out;
}

static napi_value null_value(napi_env env) {
  napi_value out;
  napi_get_null(env, &out);
  return out;
}

/* getpwnam_r/getpwuid_r/getgrnam_r want a caller buffer; NSS modules (LDAP,
 * systemd-userdb) may need more than sysconf suggests, so grow on ERANGE up
 * to a bound. */
#define LOOKUP_BUF_MAX (1 << 20)

static napi_value passwd_to_js(napi_env env, const struct passwd *pw) {
  napi_value obj;
  napi_create_object(env, &obj);
  napi_set_named_property(env, obj, "name", make_str(env, pw->pw_name));
  napi_set_named_property(env, obj, "uid", make_u32(env, pw->pw_uid));
  napi_set_named_property(env, obj, "gid", make_u32(env, pw->pw_gid));
  napi_set_named_property(env, obj, "home", make_str(env, pw->pw_dir));
  return obj;
}

/* lookupUser(nameOrUid: string | number) -> { name, uid, gid, home } | null */
static napi_value lookup_user(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[256];
  uint32_t uid = 0;
  bool by_uid = false;
  if (argc >= 1 && arg_uint32(env, argv[0], &uid)) by_uid = true;
  else if (argc < 1 || !arg_string(env, argv[0], name, sizeof name)) return throw_usage(env, "lookupUser(nameOrUid: string | number)");
  size_t cap = 4096;
  for (;;) {
    char *buf = malloc(cap);
    if (buf == NULL) return throw_errno(env, "getpwnam_r", ENOMEM, NULL);
    struct passwd pw, *res = NULL;
    int rc = by_uid ? getpwuid_r((uid_t)uid, &pw, buf, cap, &res) : getpwnam_r(name, &pw, buf, cap, &res);
    if (rc == ERANGE && cap < LOOKUP_BUF_MAX) {
      free(buf);
      cap *= 2;
      continue;
    }
    napi_value out;
    if (rc != 0 && rc != ENOENT && rc != ESRCH && rc != EBADF && rc != EPERM) {
      free(buf);
      return throw_errno(env, by_uid ? "getpwuid_r" : "getpwnam_r", rc, "the user database (NSS) failed");
    }
    out = res == NULL ? null_value(env) : passwd_to_js(env, res);
    free(buf);
    return out;
  }
}

/* lookupGroup(nameOrGid: string | number) -> { name, gid } | null */
static napi_value lookup_group(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[256];
  uint32_t gid = 0;
  bool by_gid = false;
  if (argc >= 1 && arg_uint32(env, argv[0], &gid)) by_gid = true;
  else if (argc < 1 || !arg_string(env, argv[0], name, sizeof name)) return throw_usage(env, "lookupGroup(nameOrGid: string | number)");
  size_t cap = 4096;
  for (;;) {
    char *buf = malloc(cap);
    if (buf == NULL) return throw_errno(env, "getgrnam_r", ENOMEM, NULL);
    struct group gr, *res = NULL;
    int rc = by_gid ? getgrgid_r((gid_t)gid, &gr, buf, cap, &res) : getgrnam_r(name, &gr, buf, cap, &res);
    if (rc == ERANGE && cap < LOOKUP_BUF_MAX) {
      free(buf);
      cap *= 2;
      continue;
    }
    if (rc != 0 && rc != ENOENT && rc != ESRCH && rc != EBADF && rc != EPERM) {
      free(buf);
      return throw_errno(env, by_gid ? "getgrgid_r" : "getgrnam_r", rc, "the group database (NSS) failed");
    }
    napi_value out;
    if (res == NULL) {
      out = null_value(env);
    } else {
      napi_create_object(env, &out);
      napi_set_named_property(env, out, "name", make_str(env, res->gr_name));
      napi_set_named_property(env, out, "gid", make_u32(env, res->gr_gid));
    }
    free(buf);
    return out;
  }
}

static int last_cap(void) {
  /* PR_CAPBSET_READ answers EINVAL past the kernel's last capability. */
  int last = 0;
  while (last < 63 && prctl(PR_CAPBSET_READ, last + 1, 0, 0, 0) >= 0) last++;
  return last;
}

/* capset(2) has no glibc wrapper; v3 takes two 32-bit words per set. */
static int set_caps(uint64_t keep) {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  for (int i = 0; i < 2; i++) {
    uint32_t word = (uint32_t)(keep >> (32 * i));
    data[i].effective = word;
    data[i].permitted = word;
    data[i].inheritable = word;
  }
  return (int)syscall(SYS_capset, &hdr, data);
}

static const char *drop_hint(const char *step, int err) {
  if (err == EPERM) {
    if (strcmp(step, "prctl PR_CAPBSET_DROP") == 0) return "needs CAP_SETPCAP: run sluice as root";
    if (strcmp(step, "setgroups") == 0 || strcmp(step, "setresgid") == 0) return "needs CAP_SETGID: run sluice as root";
    if (strcmp(step, "setresuid") == 0) return "needs CAP_SETUID: run sluice as root";
    if (strcmp(step, "capset") == 0) return "a kept capability is not in the permitted or bounding set";
    if (strcmp(step, "prctl PR_CAP_AMBIENT_RAISE") == 0) return "a kept capability is not permitted and inheritable";
  }
  if (err == EAGAIN && strcmp(step, "setresuid") == 0) return "RLIMIT_NPROC of the target user reached";
  if (err == EINVAL) return "a capability number this kernel does not know";
  return NULL;
}

/*
 * dropPrivileges(uid, gid, groups, keepMask) where keepMask is a number
 * holding the kept capability bits (all below 53, so exact in a double).
 * Order matters: the bounding set while CAP_SETPCAP is still effective, then
 * groups before gid before uid (setgroups and setresgid need CAP_SETGID,
 * which the uid change takes away), then capset and the ambient set (which
 * need the permitted set KEEPCAPS preserved), then no_new_privs.
 */
static napi_value drop_privileges(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  const char *usage = "dropPrivileges(uid: number, gid: number, groups: number[], keepMask: number)";
  uint32_t uid, gid;
  if (argc < 4 || !arg_uint32(env, argv[0], &uid) || !arg_uint32(env, argv[1], &gid)) return throw_usage(env, usage);
  bool is_array = false;
  uint32_t ngroups = 0;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array) return throw_usage(env, usage);
  NAPI_CALL(env, napi_get_array_length(env, argv[2], &ngroups));
  if (ngroups > MAX_GROUPS) return throw_usage(env, "dropPrivileges: at most 64 groups");
  gid_t groups[MAX_GROUPS];
  for (uint32_t i = 0; i < ngroups; i++) {
    napi_value g;
    uint32_t v;
    NAPI_CALL(env, napi_get_element(env, argv[2], i, &g));
    if (!arg_uint32(env, g, &v)) return throw_usage(env, usage);
    groups[i] = (gid_t)v;
  }
  double mask_d;
  napi_valuetype t;
  if (napi_typeof(env, argv[3], &t) != napi_ok || t != napi_number || napi_get_value_double(env, argv[3], &mask_d) != napi_ok ||
      !(mask_d >= 0 && mask_d < 9007199254740992.0) || mask_d != (double)(uint64_t)mask_d)
    return throw_usage(env, usage);
  uint64_t keep = (uint64_t)mask_d;
  if (uid == 0) return throw_usage(env, "dropPrivileges: uid 0 is not a drop");
  int last = last_cap();
  if (keep >> (last + 1) != 0) return throw_errno(env, "dropPrivileges", EINVAL, "a kept capability is beyond this kernel's CAP_LAST_CAP");

  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) return throw_errno(env, "prctl PR_SET_KEEPCAPS", errno, NULL);
  for (int cap = 0; cap <= last; cap++) {
    if (keep & (1ULL << cap)) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) return throw_errno(env, "prctl PR_CAPBSET_DROP", errno, drop_hint("prctl PR_CAPBSET_DROP", errno));
  }
  /* The glibc wrappers: they apply the change to every thread (see the top). */
  if (setgroups(ngroups, groups) < 0) return throw_errno(env, "setgroups", errno, drop_hint("setgroups", errno));
  if (setresgid(gid, gid, gid) < 0) return throw_errno(env, "setresgid", errno, drop_hint("setresgid", errno));
  if (setresuid(uid, uid, uid) < 0) return throw_errno(env, "setresuid", errno, drop_hint("setresuid", errno));
  /* From here on a failure leaves this thread without effective
   * capabilities, and teardown needs CAP_NET_ADMIN: put what is permitted
   * back into the effective set before reporting. */
  if (set_caps(keep) < 0) {
    int err = errno;
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) == 0) {
      data[0].effective = data[0].permitted;
      data[1].effective = data[1].permitted;
      syscall(SYS_capset, &hdr, data);
    }
    return throw_errno(env, "capset", err, drop_hint("capset", err));
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) return throw_errno(env, "prctl PR_CAP_AMBIENT_CLEAR_ALL", errno, NULL);
  for (int cap = 0; cap <= last; cap++) {
    if (!(keep & (1ULL << cap))) continue;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
      return throw_errno(env, "prctl PR_CAP_AMBIENT_RAISE", errno, drop_hint("prctl PR_CAP_AMBIENT_RAISE", errno));
  }
  /* KEEPCAPS has done its job; a later uid change (there is none) must not keep anything. */
  if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) return throw_errno(env, "prctl PR_SET_KEEPCAPS", errno, NULL);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return throw_errno(env, "prctl PR_SET_NO_NEW_PRIVS", errno, NULL);
  return NULL;
}

/*
 * sdNotify(socket, message): one datagram to systemd's NOTIFY_SOCKET
 * (sd_notify(3)): an absolute path, or an abstract name written with a
 * leading '@' (the '@' stands for the leading NUL byte, and the address
 * length excludes any terminator). A fresh socket each time: the calls are
 * rare (ready, stopping), and an AF_UNIX socket needs no privilege, so it
 * works the same before and after the drop.
 */
static napi_value sd_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct sockaddr_un sun;
  char path[sizeof sun.sun_path + 1];
  char message[4096];
  if (argc < 2 || !arg_string(env, argv[0], path, sizeof path) || !arg_string(env, argv[1], message, sizeof message))
    return throw_usage(env, "sdNotify(socket: string (absolute path or @abstract, < 108 bytes), message: string (< 4096 bytes))");
  size_t len = strlen(path);
  if (len < 2 || (path[0] != '/' && path[0] != '@') || len > sizeof sun.sun_path - (path[0] == '/' ? 1 : 0))
    return throw_usage(env, "sdNotify: the socket must be an absolute path or an @abstract name shorter than 108 bytes");
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, len);
  socklen_t alen;
  if (path[0] == '@') {
    sun.sun_path[0] = '\0';
    alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket AF_UNIX", errno, NULL);
  ssize_t n = sendto(fd, message, strlen(message), MSG_NOSIGNAL, (struct sockaddr *)&sun, alen);
  int err = errno;
  close(fd);
  if (n < 0) {
    const char *hint = err == ECONNREFUSED || err == ENOENT ? "nothing listens on NOTIFY_SOCKET"
                       : err == EACCES || err == EPERM  ? "NOTIFY_SOCKET is not writable by this user"
                                                        : NULL;
    return throw_errno(env, "sendto NOTIFY_SOCKET", err, hint);
  }
  return NULL;
}

napi_value init_privileges(napi_env env, napi_value exports) {
  export_fn(env, exports, "lookupUser", lookup_user);
  export_fn(env, exports, "lookupGroup", lookup_group);
  export_fn(env, exports, "dropPrivileges", drop_privileges);
  export_fn(env, exports, "sdNotify", sd_notify);
  return exports;
}
