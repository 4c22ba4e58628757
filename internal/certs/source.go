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

// challengePrefix is where pending challenges are kept, one secret per
// token (HTTP-01) or per "alpn.<hostname>" (TLS-ALPN-01).
const challengePrefix = "challenges/http-01/"

func keyPairSecret(hostname string) string { return keyPairPrefix + hostname }

// controlKeyPairSecret is where Control's own certificate and key are
// kept: one fixed name outside keyPairPrefix, so that KeyPairSource (and
// with it the watch bridge) can never list, watch or deliver it,
// whatever hostname a tunnel claims.
const controlKeyPairSecret = "control/certificate"

// ControlCertificate is the name of the Certificate that reports on
// Control's own certificate. A tunnel's Certificate is named by
// api.CertificateName, which always ends in a hash, so the two can never
// be the same object.
const ControlCertificate = "control"

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
	return listSecrets(ctx, s.Store, keyPairPrefix, decodeKeyPair)
}

// Watch implements reconcile.ListerWatcher; the relay goroutine ends with
// ctx or with the store's channel.
func (s KeyPairSource) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	return watchSecrets(ctx, s.Store, keyPairPrefix, fromRev, decodeKeyPair, func(name string) api.Object {
		return &api.CertificateKeyPair{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.CertificateKeyPairKind},
			Metadata: api.ObjectMeta{Name: name}, Hostname: name}
	})
}

// ChallengeSource lists and watches pending HTTP-01 challenges as
// *api.ACMEChallenge objects, for the watch bridge.
type ChallengeSource struct {
	// Store holds the challenges. Required.
	Store *store.Store
}

var _ reconcile.ListerWatcher = ChallengeSource{}

// List implements reconcile.ListerWatcher.
func (s ChallengeSource) List(ctx context.Context) ([]api.Object, int64, error) {
	return listSecrets(ctx, s.Store, challengePrefix, decodeChallenge)
}

// Watch implements reconcile.ListerWatcher.
func (s ChallengeSource) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	return watchSecrets(ctx, s.Store, challengePrefix, fromRev, decodeChallenge, func(name string) api.Object {
		return &api.ACMEChallenge{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.ACMEChallengeKind},
			Metadata: api.ObjectMeta{Name: name}, Token: name}
	})
}

type decodeFunc func(name string, value []byte, rev int64) (api.Object, error)

func listSecrets(ctx context.Context, st *store.Store, prefix string, decode decodeFunc) ([]api.Object, int64, error) {
	secrets, rev, err := st.ListSecrets(ctx, prefix)
	if err != nil {
		return nil, 0, err
	}
	out := make([]api.Object, 0, len(secrets))
	for _, sec := range secrets {
		obj, err := decode(strings.TrimPrefix(sec.Name, prefix), sec.Value, sec.Revision)
		if err != nil {
			// One bad value must not hide every other one.
			continue
		}
		out = append(out, obj)
	}
	return out, rev, nil
}

func watchSecrets(ctx context.Context, st *store.Store, prefix string, fromRev int64, decode decodeFunc, gone func(name string) api.Object) (<-chan reconcile.Event, error) {
	in, err := st.WatchSecrets(ctx, prefix, fromRev)
	if err != nil {
		return nil, err
	}
	out := make(chan reconcile.Event)
	go func() {
		defer close(out)
		for ev := range in {
			rev := ev.Revision
			name := strings.TrimPrefix(ev.Name, prefix)
			var re reconcile.Event
			switch ev.Type {
			case api.Error:
				re = reconcile.Event{Type: api.Error, Err: ev.Err}
			case api.Deleted:
				obj := gone(name)
				obj.GetMeta().ResourceVersion = strconv.FormatInt(rev, 10)
				re = reconcile.Event{Type: api.Deleted, Revision: rev, Object: obj}
			default:
				obj, err := decode(name, ev.Value, rev)
				if err != nil {
					continue
				}
				re = reconcile.Event{Type: ev.Type, Revision: rev, Object: obj}
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

func decodeKeyPair(host string, value []byte, rev int64) (api.Object, error) {
	var kp api.CertificateKeyPair
	if err := json.Unmarshal(value, &kp); err != nil {
		return nil, fmt.Errorf("decode certificate %s: %w", host, err)
	}
	if kp.Hostname != host {
		return nil, fmt.Errorf("decode certificate %s: it names %q", host, kp.Hostname)
	}
	kp.TypeMeta = api.TypeMeta{APIVersion: api.APIVersion, Kind: api.CertificateKeyPairKind}
	kp.Metadata = api.ObjectMeta{Name: host, ResourceVersion: strconv.FormatInt(rev, 10)}
	return &kp, nil
}

func decodeChallenge(token string, value []byte, rev int64) (api.Object, error) {
	var c api.ACMEChallenge
	if err := json.Unmarshal(value, &c); err != nil {
		return nil, fmt.Errorf("decode challenge %s: %w", token, err)
	}
	if c.Token != token {
		return nil, fmt.Errorf("decode challenge %s: it names %q", token, c.Token)
	}
	c.TypeMeta = api.TypeMeta{APIVersion: api.APIVersion, Kind: api.ACMEChallengeKind}
	c.Metadata = api.ObjectMeta{Name: token, ResourceVersion: strconv.FormatInt(rev, 10)}
	return &c, nil
}
