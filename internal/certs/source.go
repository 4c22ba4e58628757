package certs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/secretsource"
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
	return s.source().List(ctx)
}

// Watch implements reconcile.ListerWatcher.
func (s KeyPairSource) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	return s.source().Watch(ctx, fromRev)
}

func (s KeyPairSource) source() secretsource.Source {
	return secretsource.Source{Store: s.Store, Prefix: keyPairPrefix, Decode: decodeKeyPair, Gone: func(name string) api.Object {
		return &api.CertificateKeyPair{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.CertificateKeyPairKind},
			Metadata: api.ObjectMeta{Name: name}, Hostname: name}
	}}
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
	return s.source().List(ctx)
}

// Watch implements reconcile.ListerWatcher.
func (s ChallengeSource) Watch(ctx context.Context, fromRev int64) (<-chan reconcile.Event, error) {
	return s.source().Watch(ctx, fromRev)
}

func (s ChallengeSource) source() secretsource.Source {
	return secretsource.Source{Store: s.Store, Prefix: challengePrefix, Decode: decodeChallenge, Gone: func(name string) api.Object {
		return &api.ACMEChallenge{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.ACMEChallengeKind},
			Metadata: api.ObjectMeta{Name: name}, Token: name}
	}}
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
