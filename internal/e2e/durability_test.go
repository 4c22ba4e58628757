package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

const prefix = "/apis/kakuremichi.io/v1alpha1"

// TestAcknowledgedWritesSurviveKill9 holds quality.md 3 ("nothing the API
// had acknowledged is lost"): 1,000 creates acknowledged with 201 while
// Control is killed with SIGKILL at random points and restarted; every one
// of them is there afterwards, with the uid it was acknowledged with.
func TestAcknowledgedWritesSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts Control many times")
	}
	c := newControl(t)
	token := c.adminToken()
	const want = 1000
	const writers = 8
	var (
		mu    sync.Mutex            // guards acked
		acked = map[string]string{} // name -> uid from the 201
		next  atomic.Int64
		kills atomic.Int64
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	stopKiller := make(chan struct{})
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		// Kill at 10 random points of the run, each a random number of
		// acknowledged writes in, so kills land mid-request.
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
		points := make([]int, 10)
		for i := range points {
			points[i] = rng.IntN(want)
		}
		slices.Sort(points)
		for _, p := range points {
			for {
				mu.Lock()
				n := len(acked)
				mu.Unlock()
				if n >= p {
					break
				}
				select {
				case <-stopKiller:
					return
				case <-time.After(time.Millisecond):
				}
			}
			c.kill()
			kills.Add(1)
			c.start()
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				mu.Lock()
				done := len(acked) >= want
				mu.Unlock()
				if done {
					return
				}
				name := fmt.Sprintf("t-%05d", next.Add(1))
				body := fmt.Sprintf(`{"apiVersion":"kakuremichi.io/v1alpha1","kind":"Tunnel","metadata":{"name":%q},"spec":{"hostname":"%s.example.com","agent":"a","target":"http://localhost:8080"}}`, name, name)
				reqCtx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				code, out, err := request(reqCtx, "POST", c.url()+prefix+"/tunnels", token, body)
				rcancel()
				if err != nil || code >= 500 {
					time.Sleep(20 * time.Millisecond) // Control is restarting
					continue
				}
				if code != http.StatusCreated {
					t.Errorf("create %s: got %d %s", name, code, out)
					return
				}
				var obj api.Tunnel
				decodeJSON(t, out, &obj)
				mu.Lock()
				acked[name] = obj.Metadata.UID
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stopKiller)
	<-killerDone
	if ctx.Err() != nil {
		t.Fatalf("got %d acknowledged writes before the deadline, want %d", len(acked), want)
	}
	c.kill()
	c.start()
	code, out, err := request(context.Background(), "GET", c.url()+prefix+"/tunnels", token, "")
	if err != nil || code != 200 {
		t.Fatalf("list: %d %v %s", code, err, out)
	}
	var list api.List
	decodeJSON(t, out, &list)
	stored := map[string]string{}
	for _, raw := range list.Items {
		var obj api.Tunnel
		decodeJSON(t, raw, &obj)
		stored[obj.Metadata.Name] = obj.Metadata.UID
	}
	lost := 0
	for name, uid := range acked {
		if stored[name] != uid {
			lost++
			if lost < 10 {
				t.Errorf("acknowledged %s (uid %s): got uid %q after restart", name, uid, stored[name])
			}
		}
	}
	t.Logf("%d acknowledged writes, %d stored, %d SIGKILLs, %d lost", len(acked), len(stored), kills.Load(), lost)
	if kills.Load() < 3 {
		t.Errorf("got %d kills, want at least 3 for the test to mean something", kills.Load())
	}
}
