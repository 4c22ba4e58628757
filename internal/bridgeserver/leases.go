package bridgeserver

import (
	"context"
	"sync"
	"time"

	"github.com/kakuremichi/kakuremichi/store"
)

// leaseFlush is how long lease renewals gather before they are written
// together: a fleet of 11,000 nodes renews some 1,400 leases a second,
// and one write each was most of what an idle Control did.
const leaseFlush = 100 * time.Millisecond

// leaseRenewals gathers lease renewals, the latest per node, for leaseLoop
// to write in batches.
type leaseRenewals struct {
	mu      sync.Mutex
	pending map[nodeKey]time.Time
}

type nodeKey struct{ kind, name string }

// renew notes that the node of kind and name was heard from at at.
func (b *leaseRenewals) renew(kind, name string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[nodeKey]time.Time{}
	}
	k := nodeKey{kind, name}
	if at.After(b.pending[k]) {
		b.pending[k] = at
	}
}

// take returns the renewals gathered so far and forgets them.
func (b *leaseRenewals) take() []store.LeaseRenewal {
	b.mu.Lock()
	p := b.pending
	b.pending = nil
	b.mu.Unlock()
	out := make([]store.LeaseRenewal, 0, len(p))
	for k, at := range p {
		out = append(out, store.LeaseRenewal{Kind: k.kind, Name: k.name, At: at})
	}
	return out
}

// leaseLoop writes the gathered renewals every leaseFlush until ctx is
// done, and once more then, so that none heard is lost on shutdown.
func (s *Server) leaseLoop(ctx context.Context) {
	t := time.NewTicker(leaseFlush)
	defer t.Stop()
	flush := func(ctx context.Context) {
		if rs := s.leases.take(); len(rs) > 0 {
			if err := s.cfg.Store.RenewLeases(ctx, rs); err != nil {
				s.log.Warn("renew node leases", "count", len(rs), "err", err)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			flush(fctx)
			cancel()
			return
		case <-t.C:
			flush(ctx)
		}
	}
}
