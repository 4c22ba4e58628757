package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kakuremichi/kakuremichi/api"
)

// Node leases (api.NodeLease) are kept as secrets named
// LeasePrefix + "<plural>/<name>": beside the nodes, never served, a few
// dozen bytes each.

// LeasePrefix is the secret name prefix of every node lease.
const LeasePrefix = "leases/"

// leaseValue is a lease's stored form.
type leaseValue struct {
	RenewTime time.Time `json:"renewTime"`
}

// RenewLease records at as the latest heartbeat of the node of kind and
// name. The write is unconditional: a lease only ever moves forward in
// practice, and one replica's slightly older time overwriting another's
// costs at most a few seconds of the lease.
func (s *Store) RenewLease(ctx context.Context, kind, name string, at time.Time) error {
	return s.RenewLeases(ctx, []LeaseRenewal{{Kind: kind, Name: name, At: at}})
}

// LeaseRenewal is one node's latest heartbeat, for RenewLeases.
type LeaseRenewal struct {
	Kind, Name string
	At         time.Time
}

// leaseBatch is how many leases one transaction renews: etcd's default
// limit of operations per transaction.
const leaseBatch = 128

// RenewLeases records many nodes' latest heartbeats, as RenewLease does
// one's, in as few transactions as etcd takes: a fleet's renewals cost
// the store an entry per batch rather than one per node. A renewal that
// names no agent or gateway is left out and reported; the rest are
// written.
func (s *Store) RenewLeases(ctx context.Context, rs []LeaseRenewal) error {
	var errs []error
	ops := make([]clientv3.Op, 0, len(rs))
	for _, r := range rs {
		ln, ok := api.NodeLeaseName(r.Kind, r.Name)
		if !ok {
			errs = append(errs, fmt.Errorf("renew lease of %s %q: %w: only agents and gateways have leases", r.Kind, r.Name, api.ErrBadRequest))
			continue
		}
		if err := checkName(r.Name); err != nil {
			errs = append(errs, fmt.Errorf("renew lease of %s %q: %w", r.Kind, r.Name, err))
			continue
		}
		v, err := json.Marshal(leaseValue{RenewTime: r.At.UTC()})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ops = append(ops, clientv3.OpPut(s.secretKey(LeasePrefix+ln), string(v)))
	}
	for len(ops) > 0 {
		n := min(len(ops), leaseBatch)
		if _, err := s.client.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			errs = append(errs, s.mapErr(fmt.Sprintf("renew %d leases", n), err))
		}
		ops = ops[n:]
	}
	return errors.Join(errs...)
}

// leaseGoes is what deleting a node of kind and name deletes with it, in
// the same transaction: its lease.
func (s *Store) leaseGoes(kind, name string) []clientv3.Op {
	ln, ok := api.NodeLeaseName(kind, name)
	if !ok {
		return nil
	}
	return []clientv3.Op{clientv3.OpDelete(s.secretKey(LeasePrefix + ln))}
}

// renewTime decodes a stored lease's time.
func renewTime(value []byte) (time.Time, error) {
	var v leaseValue
	err := json.Unmarshal(value, &v)
	return v.RenewTime, err
}

// DecodeLease turns a stored lease, named without LeasePrefix, into an
// api.NodeLease.
func DecodeLease(name string, value []byte, rev int64) (api.Object, error) {
	t, err := renewTime(value)
	if err != nil {
		return nil, fmt.Errorf("decode lease %s: %w", name, err)
	}
	l := NewLease(name)
	l.RenewTime = t
	l.Metadata.ResourceVersion = strconv.FormatInt(rev, 10)
	return l, nil
}

// NewLease returns an empty lease named name ("agents/home").
func NewLease(name string) *api.NodeLease {
	return &api.NodeLease{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: api.NodeLeaseKind},
		Metadata: api.ObjectMeta{Name: name}}
}

// mergeLeases sets the status.lastHeartbeat of every agent and gateway
// among objs to when Control last heard from it (api.LastHeard), so that
// whoever reads nodes sees that ("last seen"), not when its status was
// last rewritten. objs are changed in place: Get and
// List call it on the objects they decoded. Other kinds are left alone.
// One read of a lone node's lease, or of the leases of each kind present.
func (s *Store) mergeLeases(ctx context.Context, objs ...api.Object) error {
	read := map[string]map[string]time.Time{} // lease times by lease name, by kind
	for _, obj := range objs {
		var beat **time.Time
		switch n := obj.(type) {
		case *api.Agent:
			beat = &n.Status.LastHeartbeat
		case *api.Gateway:
			beat = &n.Status.LastHeartbeat
		default:
			continue
		}
		kind := obj.GetTypeMeta().Kind
		ln, _ := api.NodeLeaseName(kind, obj.GetMeta().Name)
		times, ok := read[kind]
		if !ok {
			times = map[string]time.Time{}
			var secrets []Secret
			if len(objs) == 1 {
				v, rev, err := s.GetSecret(ctx, LeasePrefix+ln)
				switch {
				case err == nil:
					secrets = []Secret{{Name: LeasePrefix + ln, Value: v, Revision: rev}}
				case !errors.Is(err, api.ErrNotFound):
					return err
				}
			} else {
				all, _ := api.NodeLeaseName(kind, "")
				var err error
				if secrets, _, err = s.ListSecrets(ctx, LeasePrefix+all); err != nil {
					return err
				}
			}
			for _, sec := range secrets {
				if t, err := renewTime(sec.Value); err == nil {
					times[strings.TrimPrefix(sec.Name, LeasePrefix)] = t
				}
			}
			read[kind] = times
		}
		if t, ok := times[ln]; ok {
			*beat = api.LastHeard(*beat, &t, obj.GetMeta().CreationTimestamp)
		}
	}
	return nil
}
