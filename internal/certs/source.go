package certs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/reconcile"
	"github.com/kakuremichi/kakuremichi/store"
)

// keyPairPrefix is where certificates with their keys are kept, one
// secret per hostname.
const keyPairPrefix = "certificates/"

func keyPairSecret(hostname string) string { return keyPairPrefix + hostname }

// KeyPairSource lists and watches the stored certificates and keys as
// *api.CertificateKeyPair objects: the watch bridge's source for the
// certificates it delivers to gateways.
type KeyPairSource struct {
	// Store holds the key pairs. Required.
	Store *store.Store
}

var _ reconcile.ListerWatcher = KeyPairSource{}

// List implements reconcile.ListerWatcher.
func (s KeyPairSource) List(ctx context.Context) ([]api.Object, int64, error) {
	secrets, rev, err := s.Store.ListSecrets(ctx, keyPairPrefix)
	if err != nil {
		return nil, 0, err
	}
	out := make([]api.Object, 0, len(secrets))
	for _, sec := range secrets {
		kp, err := decodeKeyPair(sec.Name, sec.Value, sec.Revision)
		if err != nil {
			// One bad value must not hide every other certificate.
			continue
		}
		out = append(out, kp)
	}
	return out, rev, nil
}

// Watch implements reconcile.ListerWatcher; the relay goroutine ends with
// ctx or with the store's channel.
func (s KeyPairSource) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	in, err := s.Store.WatchSecrets(ctx, keyPairPrefix, fromRev)
	if err != nil {
		return nil, err
	}
	out := make(chan reconcile.Event)
	go func() {
		defer close(out)
		for ev := range in {
			rev := ev.Revision
			var re reconcile.Event
			switch ev.Type {
			case api.Error:
				re = reconcile.Event{Type: api.Error, Err: ev.Err}
			case api.Deleted:
				host := strings.TrimPrefix(ev.Name, keyPairPrefix)
				re = reconcile.Event{Type: api.Deleted, Revision: rev, Object: &api.CertificateKeyPair{
					TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.CertificateKeyPairKind},
					Metadata: api.ObjectMeta{Name: host, ResourceVersion: strconv.FormatInt(rev, 10)}, Hostname: host}}
			default:
				kp, err := decodeKeyPair(ev.Name, ev.Value, rev)
				if err != nil {
					continue
				}
				re = reconcile.Event{Type: ev.Type, Revision: rev, Object: kp}
			}
			select {
			case out <- re:
			case <-ctx.Done():
				for range in {
				}
				return
			}
		}
	}()
	return out, nil
}

func decodeKeyPair(name string, value []byte, rev int64) (*api.CertificateKeyPair, error) {
	var kp api.CertificateKeyPair
	if err := json.Unmarshal(value, &kp); err != nil {
		return nil, fmt.Errorf("decode certificate %s: %w", name, err)
	}
	host := strings.TrimPrefix(name, keyPairPrefix)
	if kp.Hostname != host {
		return nil, fmt.Errorf("decode certificate %s: it names %q", name, kp.Hostname)
	}
	kp.TypeMeta = api.TypeMeta{APIVersion: api.APIVersion, Kind: api.CertificateKeyPairKind}
	kp.Metadata = api.ObjectMeta{Name: host, ResourceVersion: strconv.FormatInt(rev, 10)}
	return &kp, nil
}
