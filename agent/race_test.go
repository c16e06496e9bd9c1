//go:build race

package agent

// raceEnabled: the race detector slows handshakes and copies several
// times; timing limits allow for it.
const raceEnabled = true
