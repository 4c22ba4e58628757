//go:build !race

package agent

// raceEnabled is true under the race detector, which slows the netstack
// down about tenfold: the bulk test moves less data then.
const raceEnabled = false
