//go:build !race

package gateway

// raceEnabled is true under the race detector, which slows the netstack
// down about tenfold: bulk tests move less data then.
const raceEnabled = false
