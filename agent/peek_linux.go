package agent

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// waiting returns how many bytes wait unread in c's socket, and copies
// the first of them into b without taking them (k of them). It never
// blocks, nor disturbs a read under way.
func waiting(c net.Conn, b []byte) (n, k int) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, 0
	}
	_ = rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err != nil || v <= 0 {
			return
		}
		n = v
		if len(b) > 0 {
			if m, _, err := unix.Recvfrom(int(fd), b, unix.MSG_PEEK|unix.MSG_DONTWAIT); err == nil {
				k = m
			}
		}
	})
	return n, k
}
