package e2e

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// pathsGrace is the --shutdown-grace the cluster harness gives nodes.
const pathsGrace = 5 * time.Second

// TestPathsDrainOnSIGTERM holds quality.md 8 with real processes: SIGTERM
// to an agent, and then to a gateway, while a request that takes 2 s is in
// flight through it: the request completes with its full answer, and then
// the process exits cleanly, within the grace period. The targets are the
// demo app served by the test itself, so the test knows the moment the
// request has reached the target and signals only then.
func TestPathsDrainOnSIGTERM(t *testing.T) {
	c := newCluster(t)
	gw := c.addGateway("gw1")
	c.addAgent("a1")
	c.addAgent("a2")
	c.waitNodesReady(30 * time.Second)
	t1, t2 := newPathsTarget(t), newPathsTarget(t)
	c.applyTunnel("one", "one.example.com", "a1", t1.url)
	c.applyTunnel("two", "two.example.com", "a2", t2.url)
	client := gatewayClient(gw.httpAddr, 30*time.Second)
	waitServing(t, client, "http://one.example.com/", 200, "Hello from target", 10*time.Second)
	waitServing(t, client, "http://two.example.com/", 200, "Hello from target", 10*time.Second)

	cases := []struct {
		name   string
		proc   *controlProc
		host   string
		target *pathsTarget
	}{
		// The agent first: the gateway must outlive it to carry the
		// request of the second case.
		{"agent", c.agents["a1"], "one.example.com", t1},
		{"gateway", gw.controlProc, "two.example.com", t2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			type answer struct {
				code int
				body string
				err  error
				at   time.Time
			}
			answered := make(chan answer, 1)
			go func() {
				code, body, err := get(client, "http://"+tc.host+"/slow?d=2s")
				answered <- answer{code, body, err, time.Now()}
			}()
			tc.target.waitArrival(t, 10*time.Second)
			signalled := time.Now()
			exited := pathsSignal(t, tc.proc, syscall.SIGTERM)

			if tc.name == "gateway" {
				// Draining, the gateway takes no new connection.
				pathsPoll(t, 2*time.Second, "the gateway's listener to close", func() bool {
					conn, err := net.DialTimeout("tcp", gw.httpAddr, time.Second)
					if err == nil {
						conn.Close()
					}
					return err != nil
				})
			}

			var a answer
			select {
			case a = <-answered:
			case <-exited:
				t.Fatalf("%s exited %v after SIGTERM with the request still in flight", tc.name, time.Since(signalled))
			case <-time.After(pathsGrace + 5*time.Second):
				t.Fatalf("no answer %v after SIGTERM", time.Since(signalled))
			}
			if a.err != nil || a.code != 200 || a.body != "done\n" {
				t.Fatalf("request in flight at SIGTERM: got %d %q %v, want 200 \"done\\n\"", a.code, a.body, a.err)
			}
			select {
			case <-exited:
			case <-time.After(pathsGrace + 3*time.Second):
				t.Fatalf("%s still running %v after SIGTERM, want an exit within the grace period of %v",
					tc.name, time.Since(signalled), pathsGrace)
			}
			exitedAt := time.Now()
			tc.proc.mu.Lock()
			code := tc.proc.cmd.ProcessState.ExitCode()
			tc.proc.mu.Unlock()
			if code != 0 {
				t.Errorf("%s exit code: got %d, want 0\n%s", tc.name, code, tc.proc.logs())
			}
			if d := exitedAt.Sub(signalled); d > pathsGrace+time.Second {
				t.Errorf("%s exited %v after SIGTERM, want within the grace period of %v", tc.name, d, pathsGrace)
			}
			t.Logf("%s: SIGTERM with the request in flight; answered 200 %v later; exited %v after SIGTERM (grace %v)",
				tc.name, a.at.Sub(signalled).Round(time.Millisecond), exitedAt.Sub(signalled).Round(time.Millisecond), pathsGrace)
		})
	}
}

// pathsPoll waits until cond holds, polling, and fails after within.
func pathsPoll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
