/*
 * Batched TUN I/O. One uv_poll per queue fd; on readiness the reader drains
 * packets into a shared receive ArrayBuffer as records
 *     [u32 little-endian length][packet bytes][pad to 4]
 * and makes ONE JS call per batch: onBatch(count, endOffset). JS must consume
 * the records before returning: the next batch overwrites them. Writing is
 * the mirror image: JS packs records into a buffer and flushes them with one
 * writeBatch call. A TUN fd is not a socket, so there is no recvmmsg: each
 * read()/write() moves one packet or one GSO super-packet.
 */
#include "common.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifndef IP_ORIGDSTADDR
#define IP_ORIGDSTADDR 20
#endif
#ifndef IPV6_ORIGDSTADDR
#define IPV6_ORIGDSTADDR 74
#endif

/* UDP mode (TPROXY): each record's bytes are a 40-byte header
 *   [u8 family 4|6][u8 0][u16 BE source port][u16 BE original dest port][u16 0]
 *   [16 source address][16 original destination address]
 * (IPv4 in the first 4 bytes), then the datagram's payload. The original
 * destination comes from IP_ORIGDSTADDR / IPV6_ORIGDSTADDR (the socket
 * needs IP_RECVORIGDSTADDR). */
#define UDP_HEADER 40

/* 64 KiB IP packet plus the 10-byte virtio_net_hdr: a GSO super-packet must
 * fit whole or the kernel truncates it. */
#define MAX_RECORD (65535 + 12 + 4)

typedef struct reader reader_t;

/* What the JS handle points at. It outlives the reader (freed by the GC
 * finalizer), so a stop after close is a no-op, never a use-after-free. */
typedef struct {
  reader_t *reader;
} reader_box_t;

struct reader {
  uv_poll_t poll;
  napi_env env;
  reader_box_t *box;
  int fd;
  uint8_t *rx;
  size_t rx_cap;
  napi_ref rx_ref;
  napi_ref callback_ref;
  napi_ref resource_ref;
  napi_async_context async_context;
  uint32_t budget;
  bool udp;
  /* kind 'icmp' (icmp.c): -1 off, else whether to strip an IPv4 header */
  int icmp;
  bool closing;
  bool in_callback;
  /* counters, read by readerStats */
  double packets, bytes, batches, wakeups, read_errors;
};

static void reader_free(uv_handle_t *handle) {
  reader_t *r = handle->data;
  napi_env env = r->env;
  if (r->box != NULL) r->box->reader = NULL;
  napi_async_destroy(env, r->async_context);
  napi_delete_reference(env, r->rx_ref);
  napi_delete_reference(env, r->callback_ref);
  napi_delete_reference(env, r->resource_ref);
  free(r);
}

static void cleanup_hook(void *arg);

static void reader_close(reader_t *r) {
  if (r->closing) return;
  r->closing = true;
  napi_remove_env_cleanup_hook(r->env, cleanup_hook, r);
  uv_poll_stop(&r->poll);
  uv_close((uv_handle_t *)&r->poll, reader_free);
}

/* Environment teardown (worker exit, process exit): stop polling; the fd is
 * owned by JS. No JS may run here. */
static void cleanup_hook(void *arg) {
  reader_t *r = arg;
  if (r->closing) return;
  r->closing = true;
  if (r->box != NULL) r->box->reader = NULL;
  uv_poll_stop(&r->poll);
  uv_close((uv_handle_t *)&r->poll, NULL);
}

/* Calls onBatch(count, endOffset) or, for a fatal read error,
 * onBatch(-errno, 0), inside a callback scope so that microtasks and
 * nextTicks drain once per batch, not per packet. */
static void deliver(reader_t *r, int32_t count, uint32_t end) {
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, resource, argv[2], result;
  napi_get_reference_value(env, r->callback_ref, &cb);
  napi_get_reference_value(env, r->resource_ref, &resource);
  napi_create_int32(env, count, &argv[0]);
  napi_create_uint32(env, end, &argv[1]);
  r->in_callback = true;
  napi_status st = napi_make_callback(env, r->async_context, resource, cb, 2, argv, &result);
  r->in_callback = false;
  if (st == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

/* One datagram with its addresses into rx at `at` (after the length word);
 * returns the record's byte count or -errno. */
static ssize_t recv_udp_origdst(int fd, uint8_t *at, size_t cap) {
  struct sockaddr_storage src;
  union {
    struct cmsghdr align;
    uint8_t buf[256];
  } control;
  struct iovec iov = {.iov_base = at + UDP_HEADER, .iov_len = cap - UDP_HEADER};
  struct msghdr msg = {.msg_name = &src, .msg_namelen = sizeof src, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
  if (n < 0) return -errno;
  memset(at, 0, UDP_HEADER);
  bool v4 = false;
  if (src.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&src;
    v4 = true;
    memcpy(at + 2, &a->sin_port, 2);
    memcpy(at + 8, &a->sin_addr, 4);
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&src;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(at + 2, &a->sin6_port, 2);
    if (memcmp(&a->sin6_addr, mapped, 12) == 0) {
      v4 = true;
      memcpy(at + 8, ((uint8_t *)&a->sin6_addr) + 12, 4);
    } else {
      memcpy(at + 8, &a->sin6_addr, 16);
    }
  }
  at[0] = v4 ? 4 : 6;
  bool found = false;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) {
      struct sockaddr_in d;
      memcpy(&d, CMSG_DATA(c), sizeof d);
      memcpy(at + 4, &d.sin_port, 2);
      memcpy(at + 24, &d.sin_addr, 4);
      found = true;
    } else if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR) {
      struct sockaddr_in6 d;
      memcpy(&d, CMSG_DATA(c), sizeof d);
      memcpy(at + 4, &d.sin6_port, 2);
      memcpy(at + 24, &d.sin6_addr, 16);
      found = true;
    }
  }
  if (!found) at[0] = 0; /* no original destination: JS drops it */
  return (ssize_t)(UDP_HEADER + n);
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  reader_t *r = handle->data;
  if (r->closing) return;
  r->wakeups++;
  if (status < 0) {
    r->read_errors++;
    deliver(r, status, 0); /* libuv status is already -errno */
    return;
  }
  uint32_t total = 0;
  while (!r->closing && total < r->budget) {
    size_t off = 0;
    int32_t count = 0;
    int fatal = 0;
    bool drained = false;
    while (total + (uint32_t)count < r->budget && off + MAX_RECORD <= r->rx_cap) {
      ssize_t n;
      if (r->icmp >= 0) {
        n = icmp_reader_recv(r->fd, r->icmp, r->rx + off + 4, MAX_RECORD - 4);
        if (n < 0) {
          errno = (int)-n;
          n = -1;
        }
      } else if (r->udp) {
        n = recv_udp_origdst(r->fd, r->rx + off + 4, MAX_RECORD - 4);
        if (n < 0) {
          errno = (int)-n;
          n = -1;
        }
      } else {
        n = read(r->fd, r->rx + off + 4, MAX_RECORD - 4);
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          drained = true;
        } else {
          fatal = errno;
          r->read_errors++;
        }
        break;
      }
      if (n == 0) {
        drained = true;
        break;
      }
      uint32_t len = (uint32_t)n;
      memcpy(r->rx + off, &len, 4); /* little-endian hosts only (x86_64, arm64) */
      off += 4 + ((len + 3u) & ~3u);
      count++;
      r->bytes += (double)len;
    }
    if (count > 0) {
      r->packets += count;
      r->batches++;
      total += (uint32_t)count;
      deliver(r, count, (uint32_t)off);
    }
    if (fatal != 0) {
      /* EBADFD/EIO: the device went away. Report once; JS decides. */
      if (!r->closing) deliver(r, -fatal, 0);
      return;
    }
    if (drained || count == 0) return;
  }
  /* Budget spent with data still queued: the level-triggered poll fires
   * again on the next loop iteration, after other handles had their turn. */
}

static void box_finalize(napi_env env, void *data, void *hint) {
  reader_box_t *box = data;
  /* The reader is still running only if JS dropped the handle without
   * calling readerStop; it keeps running until env teardown. */
  if (box->reader != NULL) box->reader->box = NULL;
  free(box);
}

#define START_USAGE \
  "readerStart(fd: number, rxBuffer: ArrayBuffer, onBatch: (count: number, end: number) => void, budget?: number, kind?: 'tun' | 'udp-origdst' | 'icmp')"

static napi_value reader_start(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint32_t budget = 256;
  bool udp = false, icmp = false;
  if (argc >= 5) {
    napi_valuetype kt;
    napi_typeof(env, argv[4], &kt);
    if (kt != napi_undefined) {
      char kind[16];
      if (!arg_string(env, argv[4], kind, sizeof kind)) return throw_usage(env, START_USAGE);
      if (strcmp(kind, "udp-origdst") == 0) udp = true;
      else if (strcmp(kind, "icmp") == 0) icmp = true;
      else if (strcmp(kind, "tun") != 0) return throw_usage(env, START_USAGE);
    }
  }
  napi_valuetype t;
  bool is_ab = false;
  if (argc < 3 || !arg_int32(env, argv[0], &fd) || fd < 0) return throw_usage(env, START_USAGE);
  napi_is_arraybuffer(env, argv[1], &is_ab);
  if (!is_ab) return throw_usage(env, START_USAGE);
  napi_typeof(env, argv[2], &t);
  if (t != napi_function) return throw_usage(env, START_USAGE);
  if (argc >= 4) {
    napi_typeof(env, argv[3], &t);
    if (t != napi_undefined && (!arg_uint32(env, argv[3], &budget) || budget == 0)) return throw_usage(env, START_USAGE);
  }
  void *rx;
  size_t rx_cap;
  NAPI_CALL(env, napi_get_arraybuffer_info(env, argv[1], &rx, &rx_cap));
  if (rx_cap < MAX_RECORD || ((uintptr_t)rx & 3) != 0)
    return throw_usage(env, "readerStart: rxBuffer must be at least 65551 bytes (one GSO super-packet record)");

  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  reader_t *r = calloc(1, sizeof *r);
  reader_box_t *box = calloc(1, sizeof *box);
  if (r == NULL || box == NULL) {
    free(r);
    free(box);
    return throw_errno(env, "readerStart", ENOMEM, NULL);
  }
  r->env = env;
  r->fd = fd;
  r->rx = rx;
  r->rx_cap = rx_cap;
  r->budget = budget;
  r->udp = udp;
  r->icmp = icmp ? icmp_reader_strip(fd) : -1;
  int rc = uv_poll_init(loop, &r->poll, fd);
  if (rc < 0) {
    free(r);
    free(box);
    return throw_errno(env, "uv_poll_init", -rc, rc == UV_EBADF ? "not an open fd" : NULL);
  }
  r->poll.data = r;
  napi_value resource, resource_name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "sluice:TunReader", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, resource, resource_name, &r->async_context);
  napi_create_reference(env, resource, 1, &r->resource_ref);
  napi_create_reference(env, argv[1], 1, &r->rx_ref);
  napi_create_reference(env, argv[2], 1, &r->callback_ref);
  napi_add_env_cleanup_hook(env, cleanup_hook, r);
  r->box = box;
  box->reader = r;
  rc = uv_poll_start(&r->poll, UV_READABLE, on_readable);
  if (rc < 0) {
    reader_close(r);
    return throw_errno(env, "uv_poll_start", -rc, NULL);
  }
  napi_value handle;
  NAPI_CALL(env, napi_create_external(env, box, box_finalize, NULL, &handle));
  return handle;
}

static reader_box_t *get_box(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  void *p;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* readerStop(handle): stops polling and releases the buffer and callback.
 * Idempotent, and safe inside onBatch (the read loop checks `closing`). The
 * fd is not closed: it belongs to the caller. */
static napi_value reader_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  reader_box_t *box = argc >= 1 ? get_box(env, argv[0]) : NULL;
  if (box == NULL) return throw_usage(env, "readerStop(handle)");
  if (box->reader != NULL) reader_close(box->reader);
  return NULL;
}

/* readerRef(handle, ref): whether the reader keeps the event loop alive. */
static napi_value reader_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool ref;
  reader_box_t *box = argc >= 2 ? get_box(env, argv[0]) : NULL;
  if (box == NULL || !arg_bool(env, argv[1], &ref)) return throw_usage(env, "readerRef(handle, ref: boolean)");
  if (box->reader != NULL && !box->reader->closing) {
    if (ref)
      uv_ref((uv_handle_t *)&box->reader->poll);
    else
      uv_unref((uv_handle_t *)&box->reader->poll);
  }
  return NULL;
}

/* readerStats(handle, out: Float64Array(5)): packets, bytes, batches,
 * wakeups, readErrors. */
static napi_value reader_stats(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  reader_box_t *box = argc >= 2 ? get_box(env, argv[0]) : NULL;
  bool is_ta = false;
  if (box == NULL || napi_is_typedarray(env, argv[1], &is_ta) != napi_ok || !is_ta)
    return throw_usage(env, "readerStats(handle, out: Float64Array(5))");
  napi_typedarray_type type;
  size_t length, offset;
  napi_value ab;
  void *p;
  NAPI_CALL(env, napi_get_typedarray_info(env, argv[1], &type, &length, &p, &ab, &offset));
  if (type != napi_float64_array || length < 5) return throw_usage(env, "readerStats(handle, out: Float64Array(5))");
  double *out = p;
  reader_t *r = box->reader;
  if (r != NULL) {
    out[0] = r->packets;
    out[1] = r->bytes;
    out[2] = r->batches;
    out[3] = r->wakeups;
    out[4] = r->read_errors;
  }
  return NULL;
}

/* writeBatch(fd, records: Uint8Array, count) -> packets written.
 * A packet the kernel rejects (EINVAL, EIO, ...) is skipped and counted as
 * not written; EAGAIN (queue full) ends the batch early. */
static napi_value write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint8_t *buf;
  size_t cap;
  uint32_t count;
  if (argc < 3 || !arg_int32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &buf, &cap) ||
      !arg_uint32(env, argv[2], &count))
    return throw_usage(env, "writeBatch(fd: number, records: Uint8Array, count: number)");
  size_t off = 0;
  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (off + 4 > cap) break;
    uint32_t len;
    memcpy(&len, buf + off, 4);
    if (len > cap - off - 4) break;
    ssize_t n;
    do {
      n = write(fd, buf + off + 4, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN) break;
      if (errno == EBADF) return throw_errno(env, "write", errno, "the TUN fd is closed");
    } else {
      written++;
    }
    off += 4 + ((len + 3u) & ~3u);
  }
  napi_value v;
  napi_create_uint32(env, written, &v);
  return v;
}

napi_value init_reader(napi_env env, napi_value exports) {
  export_fn(env, exports, "readerStart", reader_start);
  export_fn(env, exports, "readerStop", reader_stop);
  export_fn(env, exports, "readerRef", reader_ref);
  export_fn(env, exports, "readerStats", reader_stats);
  export_fn(env, exports, "writeBatch", write_batch);
  export_int(env, exports, "MAX_RECORD", MAX_RECORD);
  return exports;
}
