package reconciletest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile/reconciletest"
)

func tunnel(name string) *api.Tunnel {
	return &api.Tunnel{
		Metadata: api.ObjectMeta{Name: name},
		Spec:     api.TunnelSpec{Hostname: name + ".example.com", Agent: "agent-1", Target: "http://localhost:8080"},
	}
}

// TestSourceWrites checks the store semantics that controllers are tested
// against: conflicts, no-op writes, generation and finalizers.
func TestSourceWrites(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, s *reconciletest.Source, created api.Object) error
		want error // nil: success
	}{
		{"create twice", func(_ *testing.T, s *reconciletest.Source, _ api.Object) error {
			_, err := s.Create(ctx, tunnel("a"))
			return err
		}, api.ErrAlreadyExists},
		{"update with a stale resourceVersion", func(t *testing.T, s *reconciletest.Source, created api.Object) error {
			fresh := api.Clone(created)
			fresh.GetMeta().Labels = map[string]string{"x": "1"}
			if _, err := s.Update(ctx, fresh); err != nil {
				t.Fatalf("first update: %v", err)
			}
			created.GetMeta().Labels = map[string]string{"x": "2"}
			_, err := s.Update(ctx, created)
			return err
		}, api.ErrConflict},
		{"status update with a stale resourceVersion", func(t *testing.T, s *reconciletest.Source, created api.Object) error {
			fresh := api.Clone(created)
			fresh.GetMeta().Labels = map[string]string{"x": "1"}
			if _, err := s.Update(ctx, fresh); err != nil {
				t.Fatalf("update: %v", err)
			}
			created.GetStatus().ObservedGeneration = 1
			_, err := s.UpdateStatus(ctx, created)
			return err
		}, api.ErrConflict},
		{"delete with a stale resourceVersion", func(t *testing.T, s *reconciletest.Source, created api.Object) error {
			fresh := api.Clone(created)
			fresh.GetMeta().Labels = map[string]string{"x": "1"}
			if _, err := s.Update(ctx, fresh); err != nil {
				t.Fatalf("update: %v", err)
			}
			_, err := s.Delete(ctx, "Tunnel", "a", created.GetMeta().ResourceVersion)
			return err
		}, api.ErrConflict},
		{"delete a missing object", func(_ *testing.T, s *reconciletest.Source, _ api.Object) error {
			_, err := s.Delete(ctx, "Tunnel", "nope", "")
			return err
		}, api.ErrNotFound},
		{"an unchanged status writes nothing", func(t *testing.T, s *reconciletest.Source, created api.Object) error {
			rev := s.Revision()
			out, err := s.UpdateStatus(ctx, created)
			if err == nil && (s.Revision() != rev || out.GetMeta().ResourceVersion != created.GetMeta().ResourceVersion) {
				t.Fatalf("revision after a no-op status write: got %d, want %d", s.Revision(), rev)
			}
			return err
		}, nil},
		{"generation moves with spec only", func(t *testing.T, s *reconciletest.Source, created api.Object) error {
			tn := api.Clone(created).(*api.Tunnel)
			tn.Metadata.Labels = map[string]string{"x": "1"}
			out, err := s.Update(ctx, tn)
			if err != nil || out.GetMeta().Generation != 1 {
				t.Fatalf("label update: got generation %v (%v), want 1", out, err)
			}
			tn = out.(*api.Tunnel)
			tn.Spec.Target = "http://localhost:1"
			out, err = s.Update(ctx, tn)
			if err == nil && out.GetMeta().Generation != 2 {
				t.Fatalf("spec update: got generation %d, want 2", out.GetMeta().Generation)
			}
			return err
		}, nil},
		{"finalizers hold a delete back", func(t *testing.T, s *reconciletest.Source, created api.Object) error {
			tn := api.Clone(created)
			tn.GetMeta().Finalizers = []string{"example.io/hold"}
			tn, err := s.Update(ctx, tn)
			if err != nil {
				t.Fatalf("add finalizer: %v", err)
			}
			marked, err := s.Delete(ctx, "Tunnel", "a", "")
			if err != nil || marked.GetMeta().DeletionTimestamp == nil {
				t.Fatalf("delete with a finalizer: got %v, %v, want it marked", marked, err)
			}
			marked.GetMeta().Finalizers = nil
			if _, err := s.Update(ctx, marked); err != nil {
				t.Fatalf("remove finalizer: %v", err)
			}
			_, err = s.Get(ctx, "Tunnel", "a")
			return err
		}, api.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := reconciletest.NewSource(reconciletest.Config{})
			created, err := s.Create(ctx, tunnel("a"))
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			err = tt.run(t, s, created)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSourceWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := reconciletest.NewSource(reconciletest.Config{})
	if _, err := s.Create(ctx, tunnel("a")); err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := s.Create(ctx, &api.Agent{Metadata: api.ObjectMeta{Name: "ag"}}); err != nil {
		t.Fatalf("create agent: %v", err)
	}
	if _, err := s.Delete(ctx, "Tunnel", "a", ""); err != nil {
		t.Fatalf("delete: %v", err)
	}
	rev := s.Revision()

	ch, err := s.Watch(ctx, "Tunnel", 1)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	var got []string
	for range 2 {
		ev := <-ch
		got = append(got, string(ev.Type))
		if ev.Type == api.Deleted && ev.Revision != rev {
			t.Fatalf("deleted event revision: got %d, want %d", ev.Revision, rev)
		}
	}
	if got[0] != string(api.Added) || got[1] != string(api.Deleted) {
		t.Fatalf("tunnel events from revision 1: got %v, want [ADDED DELETED]", got)
	}

	s.Compact(rev)
	gone, err := s.Watch(ctx, "Tunnel", 1)
	if err != nil {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	ev := <-gone
	if ev.Type != api.Error || !errors.Is(ev.Err, api.ErrGone) {
		t.Fatalf("watch from a compacted revision: got %s %v, want ERROR wrapping api.ErrGone", ev.Type, ev.Err)
	}
	if _, ok := <-gone; ok {
		t.Fatalf("after the error event: got another event, want the channel closed")
	}

	s.BreakWatches(api.ErrUnavailable)
	for ev := range ch {
		if ev.Type != api.Error || !errors.Is(ev.Err, api.ErrUnavailable) {
			t.Fatalf("broken watch: got %s %v, want ERROR wrapping api.ErrUnavailable", ev.Type, ev.Err)
		}
	}
}
