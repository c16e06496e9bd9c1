package main

import "golang.org/x/sys/unix"

// waitid blocks until pid has exited, leaving it unreaped (WNOWAIT) so its
// /proc entries can still be read.
func waitid(pid int) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}
