/**
 * Types of the sluice native addon (native/build/Release/sluice_native.node).
 * Every function throws a TypeError with code SLUICE_NATIVE_USAGE on bad
 * arguments, and an Error whose code is the errno name (message
 * "TUNSETIFF: EPERM (needs CAP_NET_ADMIN)") when a system call fails.
 */

export interface TunOpenOptions {
  /** Prefix every packet with a 10-byte struct virtio_net_hdr (IFF_VNET_HDR). */
  vnetHdr?: boolean;
  /** TUNSETOFFLOAD: CSUM|TSO4|TSO6 (+USO4|USO6 where the kernel allows). Needs vnetHdr. */
  offload?: boolean;
  /** Try UDP segmentation offload too (Linux >= 6.2). Default true. */
  uso?: boolean;
  /** Number of queues (IFF_MULTI_QUEUE when > 1), 1..64. Default 1. */
  queues?: number;
}

export interface TunOpenResult {
  /** The interface name the kernel gave (resolves "tun%d"). */
  name: string;
  /** One non-blocking, close-on-exec fd per queue. */
  fds: number[];
  vnetHdr: boolean;
  /** TUN_F_* flags the kernel accepted (0 without offload). */
  offloads: number;
}

/** Opaque reader handle. */
export interface ReaderHandle {
  readonly __brand: 'ReaderHandle';
}

export interface SocketAddress {
  address: string;
  port: number;
  family: 4 | 6;
}

export interface CreateSocketOptions {
  family?: 4 | 6;
  type?: 'tcp' | 'udp';
  /** SO_MARK. */
  mark?: number;
  /** IP_TRANSPARENT / IPV6_TRANSPARENT (TPROXY). */
  transparent?: boolean;
  /** SO_BINDTODEVICE. */
  device?: string;
  reuseAddr?: boolean;
  /** UDP: IP_RECVORIGDSTADDR / IPV6_RECVORIGDSTADDR. */
  recvOrigDst?: boolean;
  bind?: { address: string; port: number };
  /** TCP: listen with this backlog (needs bind). */
  listen?: number;
}

export interface SluiceNative {
  tunOpen(name: string, options?: TunOpenOptions): TunOpenResult;
  /** TUNSETSTEERINGEBPF on one queue's fd (the program is the device's): the queue is `program's return % queues`; -1 detaches. */
  tunSetSteering(fd: number, progFd: number): void;
  linkSetMtu(name: string, mtu: number): void;
  linkSetUp(name: string, up: boolean): void;
  /** ifindex, or 0 when there is no such interface. */
  linkIndex(name: string): number;
  closeFd(fd: number): void;

  /**
   * Polls fd; per readiness drains up to `budget` (default 256) packets into
   * rxBuffer as records [u32 LE length][bytes][pad to 4] and calls
   * onBatch(count, endOffset) once per filled buffer. A fatal read error is
   * reported as onBatch(-errno, 0). Records are only valid during the call.
   */
  /**
   * kind 'tun' (default): records are packets read from a TUN fd. kind
   * 'udp-origdst': records are datagrams from a UDP socket with
   * IP_RECVORIGDSTADDR, each prefixed by a 40-byte header: u8 family (4|6,
   * 0 when no original destination came), u8 0, u16 BE source port, u16 BE
   * original destination port, u16 0, 16 bytes source, 16 bytes original
   * destination (IPv4 in the first 4). kind 'icmp' (an icmpOpen fd):
   * records are ICMP messages, each prefixed by a 20-byte header: u8 family
   * (4|6, 0 for a malformed one), 3 bytes 0, 16 bytes source address (IPv4
   * in the first 4); a raw IPv4 socket's IP header is stripped.
   */
  readerStart(
    fd: number,
    rxBuffer: ArrayBuffer,
    onBatch: (count: number, end: number) => void,
    budget?: number,
    kind?: 'tun' | 'udp-origdst' | 'icmp',
): ReaderHandle;
  /** Stops polling (idempotent, safe inside onBatch). Does not close the fd. */
  readerStop(handle: ReaderHandle): void;
  readerRef(handle: ReaderHandle, ref: boolean): void;
  /** Fills out with packets, bytes, batches, wakeups, readErrors. */
  readerStats(handle: ReaderHandle, out: Float64Array): void;
  /** Writes `count` records [u32 LE length][bytes][pad to 4]; returns packets written. */
  writeBatch(fd: number, records: Uint8Array, count: number): number;

  setMark(fd: number, mark: number): void;
  getOriginalDst(fd: number): SocketAddress;
  createSocket(options: CreateSocketOptions): number;
  /**
   * An ICMP socket for forwarded echo requests (native/src/icmp.c):
   * SOCK_RAW (CAP_NET_RAW; ICMP_FILTER passes echo replies and errors only)
   * or, with kind 'auto' when raw is refused, a SOCK_DGRAM ping socket
   * (net.ipv4.ping_group_range), whose identifier the kernel picks. `ident`
   * is the identifier for a raw socket; the result says which was used.
   */
  icmpOpen(options: { family: 4 | 6; ident: number; mark?: number; device?: string; kind?: 'auto' | 'raw' | 'dgram' }): { fd: number; ident: number; raw: boolean };
  /**
   * Sends msg[msgOff, msgOff+msgLen) (an ICMP message; IPv4 raw sockets
   * need its checksum) to the 4 or 16 address bytes at dst[dstOff] with
   * this TTL / hop limit. Returns 0 or the errno (ENETUNREACH, EMSGSIZE...).
   */
  /**
   * The kernel's path MTU toward `address` for sockets with this mark and
   * interface (IP_MTU / IPV6_MTU of a connected UDP socket: the route's
   * MTU, lowered by what routers' too-big errors taught it); 0 without a route.
   */
  pathMtu(family: 4 | 6, address: string, mark: number, device: string | undefined): number;
  icmpSend(fd: number, family: 4 | 6, dst: Uint8Array, dstOff: number, msg: Uint8Array, msgOff: number, msgLen: number, ttl: number): number;

  /** Loads the classifier object (libbpf): the program's fd and each map's fd by name. */
  bpfLoad(objectPath: string): { prog: number; maps: Record<string, number> };
  /** Attaches at clsact ingress/egress (creating clsact if needed); true when it created the qdisc. */
  bpfTcAttach(ifindex: number, progFd: number, ingress: boolean): boolean;
  /** Removes sluice's filter; with destroyQdisc also the clsact qdisc. Missing things are not errors. */
  bpfTcDetach(ifindex: number, ingress: boolean, destroyQdisc: boolean): void;
  bpfMapUpdate(fd: number, key: Uint8Array, value: Uint8Array): void;
  /** Returns whether the key existed. */
  bpfMapDelete(fd: number, key: Uint8Array): boolean;
  /** Fills valueOut (per-CPU maps: one value per possible CPU, each padded to 8 bytes); false when absent. */
  bpfMapLookup(fd: number, key: Uint8Array, valueOut: Uint8Array): boolean;
  bpfPossibleCpus(): number;

  /** getpwnam_r / getpwuid_r (NSS); null when there is no such user. */
  lookupUser(nameOrUid: string | number): { name: string; uid: number; gid: number; home: string } | null;
  /** getgrnam_r / getgrgid_r (NSS); null when there is no such group. */
  lookupGroup(nameOrGid: string | number): { name: string; gid: number } | null;
  /**
   * Gives up root for good (native/src/privileges.c): PR_SET_KEEPCAPS, the
   * bounding set cut to `keepMask`, setgroups(groups), setresgid(gid),
   * setresuid(uid) through the glibc wrappers (which apply them to every
   * thread), capset(permitted = effective = inheritable = keepMask) and the
   * ambient set raised to keepMask on the calling thread, then
   * PR_SET_NO_NEW_PRIVS. keepMask holds capability bits (1 << CAP_NET_ADMIN,
   * ...). Errors name the step ("setresuid: EPERM (needs CAP_SETUID: ...)").
   */
  dropPrivileges(uid: number, gid: number, groups: number[], keepMask: number): void;
  /**
   * Sends one sd_notify(3) datagram ("READY=1", "STOPPING=1", ...) to
   * `socket`: an absolute path or an "@abstract" name, as NOTIFY_SOCKET holds it.
   */
  sdNotify(socket: string, message: string): void;

  /**
   * The socket with this exact 4-tuple on this host (NETLINK_SOCK_DIAG,
   * inet_diag): `local` is the socket's own address (for a connection this
   * machine opens, the source), `remote` its peer. A UDP socket that is
   * unconnected or bound to a wildcard address is found too (the kernel's
   * receive lookup). uid is the creator's fsuid, inode the number that
   * /proc/PID/fd shows as socket:[INODE]. null when there is no such socket.
   */
  socketOwner(protocol: 'tcp' | 'udp', family: 4 | 6, local: Uint8Array, localPort: number, remote: Uint8Array, remotePort: number): { uid: number; inode: number } | null;

  /**
   * Isolate::MemoryPressureNotification(kModerate) for the calling thread's
   * isolate: an incremental, memory-reducing mark-compact that gives sparse
   * old-space pages back (native/src/heap.cc; src/heap-reducer.ts).
   */
  reduceHeap(): void;

  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_USO4: number;
  readonly TUN_F_USO6: number;
  /** Largest record a read can produce (65535 + virtio header + length, padded). */
  readonly MAX_RECORD: number;
}
