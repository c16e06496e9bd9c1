// Package agent serves disks to a deltasync on another machine, and opens
// such disks as sources and targets (disk.Source, disk.Target), so that
// transfer.Sync works unchanged against a remote disk while only hashes
// and changed data cross the network.
//
//	// On the disk's machine: deltasync agent -listen :7040 -disk vm1=/dev/sdb ...
//	c := &agent.Client{Addr: "host:7040", Token: token, Pin: pin}
//	dst, err := c.OpenTarget(ctx, "vm1")
//	if err != nil {
//		return err
//	}
//	defer dst.Close()
//	st, err := transfer.Sync(ctx, src, dst, nil) // hashes come back, changes go out
//
// # Words
//
//   - agent: a Server, embedded in a Go program or run as
//     `deltasync agent`, next to the disks it serves.
//   - disk name: what clients call a disk; the agent maps it to a path
//     given when it was started. No path from a client is ever opened.
//   - session: one TLS connection, authenticated, on one disk, opened as a
//     target (read, write, hash; under the agent's exclusive hold) or a
//     source (read and hash).
//   - client: a Client (address, credentials, limits) opens a Disk,
//     which is a disk.Target (and Source) with the usual optional
//     capabilities, and a transfer.BlockHasher.
//   - hash stream: the agent hashing its own disk with the client's keyed
//     blockdiff.Hasher and streaming the hashes back while the engine
//     hashes the source locally (transfer's hash mode, see
//     transfer.BlockHasher).
//   - write buffer: the bytes of writes queued or in flight and not yet
//     acknowledged by the agent (Client.WriteBuffer).
//
// # Protocol
//
// TLS 1.3 (ALPN "deltasync-agent/3", or "/2" or "/1" with a peer from
// before version 3 or 2) over one TCP connection per Disk, carrying
// frames of an 8-byte header (type, 24-bit length, 32-bit request or
// stream number) and a payload of at most MaxPayload (8 MiB).
// The first message is the client's hello (disk name, mode, token); the
// agent answers with a welcome (size, alignment, largest write, a digest
// of its disk's identity and, from version 2, its machine's boot ID) or a
// fatal error, and closes.
//
// After that, both directions run at once, without lock-step:
//
//   - Writes and zeroings flow from the client in order, each write's
//     data zstd-compressed when a cheap estimate says it pays (a few
//     samples are compressed first; random data goes raw). The agent
//     applies them in order and acknowledges them by count; the first
//     failure is reported once; later writes are not applied, and neither
//     the failed write nor a later one is acknowledged.
//   - Flush, resize, read, allocation, version and cache requests travel
//     in the same order as the writes and are answered by number, so a
//     flush covers every write sent before it, and reads and hashes see
//     them. So do, from version 3, a run's watch, its end (stopped,
//     done, abandoned) and the check of an earlier run's evidence (see
//     # Evidence).
//   - A hash request names the algorithm, the per-run key, the block
//     size, the range and hints, and a credit: the agent hashes its disk
//     in parallel (blockdiff.HashBlocks) and sends batches of hashes as
//     they are ready (16 bytes and 1 tag byte per block for XXH3; a run
//     of zero blocks takes a few bytes in all), never more than the
//     credit; the client grants more as the comparison consumes them,
//     ahead of any queued writes.
//
// So the bytes on the wire are the changed data (compressed when it
// compresses), the hashes, and a little framing: 8 bytes a message and
// TLS's 22 bytes a record of up to 16 KiB. TCP buffers are left to
// Linux's autotuning when it may grow them to DefaultSocketBuffer (8 MiB,
// 100 ms at 600 Mbit/s), and set explicitly otherwise.
//
// # Security
//
// TLS is always on. The client verifies the agent's certificate with a CA
// (Client.RootCAs, or the system's roots) or pins its SHA-256
// (Client.Pin, CertificatePin); SelfSigned makes a certificate for a
// first run. Every session is authenticated before anything else, even
// listing or hashing: by a bearer token, which the agent knows only by
// its SHA-256 (Token: hash, disk names, expiry; compared in constant
// time; never logged, never echoed), or by a client certificate from the
// agent's ServerOptions.ClientCAs (mutual TLS), or both. A message that
// is malformed, oversized or out of place ends the session with an
// error, never a panic; the writes applied before it stay, and the
// client's next run compares again.
//
// A connection takes one of the agent's sessions
// (ServerOptions.MaxSessions) only once authenticated. Before that it is
// in a budget of its own, for HandshakeTimeout (3 s) at most:
// MaxHandshakes (16) TLS handshakes at once, and 16 times as many
// connections that have not sent their ClientHello or wait for a
// handshake; when those are full, a new connection displaces the oldest
// that has not sent its ClientHello (see preauth.go). So a flood of idle
// or slow connections costs the agent a few KiB each and keeps no client
// out. An authenticated client that finds every session taken is told
// so: ErrAgentBusy, "agent busy: N sessions in use".
//
// What the agent holds of its clients' messages is bounded across all
// sessions by ServerOptions.FrameMemory (256 MiB by default): a message
// of more than 4 KiB waits for its share before its payload is read, and
// a session whose client stalls in the middle of one is ended after
// FrameTimeout. So the agent's memory for its clients' messages stays
// within FrameMemory and about 1.1 MiB a session (326 MiB with 64
// sessions), whatever its authenticated clients send; see FrameMemory
// for what is not counted.
//
// # Durability and journals
//
// WriteAt returns once the write is queued (see Disk.WriteAt); Applied
// returns once every write queued before it is applied on the agent (in
// its machine's page cache; the agent acknowledges writes as it applies
// them), and Flush once they are also fdatasync'd. A dropped connection
// fails the run; writes queued but not acknowledged may be lost, those
// the agent received it applies, and the rerun resumes from the journal
// when the agent's evidence holds (# Evidence), or compares again:
// through an agent that costs hashing both disks, not sending them. A
// Disk is a disk.WriteBehind and a
// disk.AppliedBarrier: the agent tells its machine's boot ID in its
// welcome, and with the default durability transfer saves each journal
// checkpoint after Applied, stamped with that boot ID, rather than after
// a flush (an fdatasync on the agent every JournalBytes). So the journal
// never counts a write still queued in this process; an interrupted run
// resumes from its last save while the agent's machine keeps running and
// the agent's evidence holds, and starts over, comparing everything,
// after that machine rebooted. An agent that does not send its boot ID
// gets a flush before every save.
//
// # Evidence
//
// A Disk is a disk.Witness: the agent, which outlives
// its clients, is what shows a rerun that nothing but the interrupted run
// wrote the disk, also when the client was killed with SIGKILL.
//
//   - Watch (before the run's first change) sends a random watch ID, the
//     journal's token; the agent marks a file incomplete (localdisk's
//     user.deltasync.incomplete) until the watch's Done.
//   - The agent keeps, per disk (by its local identity: two names for one
//     file are one disk), a generation that moves when a session starts
//     changing it (a write, zeroing or resize).
//   - When a watched session ends without Done (the client's Close after
//     Stopped, or a dropped connection), the agent applies every write it
//     received, flushes the disk (fdatasync), takes the disk's own
//     evidence (localdisk's Witness: device, inode, birth time and
//     nanosecond ctime of a file; diskseq and write counters of a device,
//     its parent's, a loop device's backing file), and records it with
//     the generation, all before it closes the disk, so before another
//     session can open it: one that asks meanwhile is refused as busy
//     after a short wait. A write or flush that failed in the session, a
//     failed flush at the end, or a write after the run's Stopped is
//     recorded as the reason the evidence cannot hold.
//   - A failed flush of a disk, in any session, drops the disk's cached
//     pages and marks the disk: until the agent restarts, it hashes that
//     disk with O_DIRECT for every session, because pages whose
//     write-back failed may stay cached, clean, holding data the disk does
//     not have. A client whose journal says a flush failed asks for
//     O_DIRECT hashing itself (the hash request's direct flag), which
//     covers an agent restarted since. An agent built before the flag
//     (protocol version 3 too) ends such a session as malformed: the
//     rerun fails, naming the agent, rather than trusting cached pages.
//   - Check (the rerun, before its first change) holds only if the agent
//     has that watch's record, no session changed the disk since (the
//     generation), nothing failed, and the disk's own evidence is
//     unchanged: nothing else wrote, truncated or replaced it.
//
// The records live in the agent's memory: an agent restarted between the
// runs has none, and the rerun compares everything. In the deltasync
// command (which calls localdisk.RunWatchdogIfAsked), a resumable watch
// also runs localdisk's watchdog, which notes a write by another process
// while the session runs (fanotify, where the agent has CAP_SYS_ADMIN).
// What remains: without that watchdog, a program on the agent's machine
// that ignores the disk's locks and writes it while the session runs or
// drains, before the evidence is taken, is taken for the run; before
// Linux 6.13, a write within one clock tick of the session's last keeps
// the ctime; and what localdisk says of devices (a write through another
// node of the same storage). An agent from before version 3 keeps no
// evidence: its Watch is empty and a rerun compares everything.
//
// # Pulling
//
// A Disk opened with OpenSource is a disk.Source: reads are round
// trips of up to 4 MiB, compressed when that pays, and holes are skipped
// through AllocatedRanges. transfer hashes only targets remotely, so a
// pull reads the whole allocated source across the network.
//
// # Systems
//
// The client side (Client, its OpenSource and OpenTarget, and the Disk
// they return)
// builds on every system Go supports (CI cross-builds it for darwin,
// windows and linux/arm64). A Server serves local disks on Linux only,
// where package localdisk is; elsewhere opening a disk fails with an
// error saying so.
package agent
