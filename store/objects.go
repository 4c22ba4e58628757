package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kakuremichi/kakuremichi/api"
)

// listPageSize is how many keys one range request of List returns, so a
// kind with 100k objects never makes one huge response.
const listPageSize = 500

// maxDeleteAttempts bounds how often Delete without a precondition re-reads
// an object that keeps changing under it.
const maxDeleteAttempts = 5

// WriteOptions modify a write.
type WriteOptions struct {
	// DryRun runs every check and returns what would be stored, writing
	// nothing. The returned object carries the current resourceVersion
	// (none for a create).
	DryRun bool
}

// DeleteOptions modify a delete.
type DeleteOptions struct {
	// ResourceVersion, when not empty, is a precondition: the delete fails
	// with api.ErrConflict unless the stored object is at this version.
	ResourceVersion string
	// DryRun runs every check and returns what would be the result,
	// deleting nothing.
	DryRun bool
}

// Get returns the object of the given kind and name, with its
// resourceVersion, or an error wrapping api.ErrNotFound. An agent's or a
// gateway's status.lastHeartbeat is the later of the stored one and its
// lease's (api.NodeLease): when Control last heard from it.
func (s *Store) Get(ctx context.Context, kind, name string) (api.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, fmt.Errorf("get %s %q: %w", kind, name, err)
	}
	op := fmt.Sprintf("get %s %q", k.Singular, name)
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	obj, _, err := s.read(ctx, op, k, name)
	if err != nil {
		return nil, err
	}
	if err := s.mergeLeases(ctx, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return obj, nil
}

// List returns the objects of a kind that match sel, sorted by name, and
// the revision they were read at: a Watch from that revision + 1 misses
// nothing and repeats nothing. Large kinds are read in pages, all at the
// same revision. Agents and gateways come with their leases merged into
// status.lastHeartbeat, as Get returns them (their watch events do not).
func (s *Store) List(ctx context.Context, kind string, sel api.Selector) (objs []api.Object, rev int64, err error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", kind, err)
	}
	op := "list " + k.Plural
	prefix := s.kindPrefix(k)
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	pageSize := s.pageSize
	if pageSize == 0 {
		pageSize = listPageSize
	}
	objs = []api.Object{}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.client.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, s.mapErr(op, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			obj, err := s.decode(k, kv)
			if err != nil {
				// One undecodable value must not hide every other
				// object from the informers that list this kind.
				s.log.Error("skipping a stored object that does not decode", "key", string(kv.Key), "err", err)
				continue
			}
			if sel.Matches(obj.GetMeta().Labels) {
				objs = append(objs, obj)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			if err := s.mergeLeases(ctx, objs...); err != nil {
				return nil, 0, fmt.Errorf("%s: %w", op, err)
			}
			return objs, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Create stores a new object. The object is defaulted and validated
// (validation errors are returned as the api.ErrorList they are); the
// store sets its uid, creationTimestamp and generation 1, and drops its
// status, which only UpdateStatus writes. It fails with
// api.ErrAlreadyExists when the name is taken and api.ErrBadRequest when
// obj carries a resourceVersion. obj itself is not modified; the stored
// object is returned with its resourceVersion.
func (s *Store) Create(ctx context.Context, obj api.Object, opts WriteOptions) (api.Object, error) {
	k, o, err := ownCopy(obj)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	m := o.GetMeta()
	op := fmt.Sprintf("create %s %q", k.Singular, m.Name)
	if m.ResourceVersion != "" {
		return nil, fmt.Errorf("%s: %w: metadata.resourceVersion must be empty on create", op, api.ErrBadRequest)
	}
	o.Default()
	if err := api.Validate(o); err != nil {
		return nil, err
	}
	m.UID = newUID()
	m.CreationTimestamp = time.Now().UTC().Truncate(time.Second)
	m.Generation = 1
	m.DeletionTimestamp = nil
	o, err = replaceStatus(k, o, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	value, err := encode(o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	key := s.key(k, m.Name)
	if opts.DryRun {
		resp, err := s.client.Get(ctx, key, clientv3.WithCountOnly())
		if err != nil {
			return nil, s.mapErr(op, err)
		}
		if resp.Count > 0 {
			return nil, fmt.Errorf("%s: %w", op, api.ErrAlreadyExists)
		}
		return decodeValue(k, value, 0)
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return nil, s.mapErr(op, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: %w", op, api.ErrAlreadyExists)
	}
	return decodeValue(k, value, resp.Header.Revision)
}

// Update replaces an object's labels, annotations, finalizers, owner
// references and spec with obj's, after defaulting and validating obj.
// Everything else (uid, creationTimestamp, deletionTimestamp, status) is
// kept from the stored object; generation moves by one when spec
// changed. A non-empty resourceVersion in obj must be the stored one, and
// a write in between read and write fails too: both with api.ErrConflict.
// An update that changes nothing writes nothing and returns the stored
// object. An update that removes the last finalizer of an object being
// deleted deletes it and returns its last state, with the resourceVersion
// of the deletion. obj itself is not modified.
func (s *Store) Update(ctx context.Context, obj api.Object, opts WriteOptions) (api.Object, error) {
	k, o, err := ownCopy(obj)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	m := o.GetMeta()
	op := fmt.Sprintf("update %s %q", k.Singular, m.Name)
	o.Default()
	if err := api.Validate(o); err != nil {
		return nil, err
	}
	cur, kv, oTop, err := s.readForWrite(ctx, op, k, o)
	if err != nil {
		return nil, err
	}
	curTop, err := topLevel(cur)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	specChanged := !bytes.Equal(oTop["spec"], curTop["spec"])
	setField(oTop, "status", curTop["status"])
	next, err := fromTopLevel(k, oTop)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	nm, cm := next.GetMeta(), cur.GetMeta()
	nm.Namespace = cm.Namespace
	nm.UID = cm.UID
	nm.CreationTimestamp = cm.CreationTimestamp
	nm.DeletionTimestamp = cm.DeletionTimestamp
	nm.Generation = cm.Generation
	if specChanged {
		nm.Generation++
	}
	nm.ResourceVersion = ""

	if cm.DeletionTimestamp != nil && len(nm.Finalizers) == 0 {
		return s.finalize(ctx, op, next, kv, opts.DryRun)
	}
	return s.replace(ctx, op, k, cur, next, kv, opts.DryRun)
}

// UpdateStatus replaces an object's status with obj's, keeping everything
// else as stored. The resourceVersion rules are Update's. A status equal to
// the stored one writes nothing and returns the stored object. obj itself
// is not modified.
func (s *Store) UpdateStatus(ctx context.Context, obj api.Object, opts WriteOptions) (api.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return nil, fmt.Errorf("update status: %w", err)
	}
	status := statusIndex(obj)
	if status == nil {
		return s.updateStatusJSON(ctx, obj, opts)
	}
	m := obj.GetMeta()
	op := fmt.Sprintf("update status of %s %q", k.Singular, m.Name)
	if err := checkName(m.Name); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	want, err := parseResourceVersion(m.ResourceVersion)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	cur, kv, err := s.read(ctx, op, k, m.Name)
	if err != nil {
		return nil, err
	}
	if err := checkPreconditions(op, obj, cur, kv, want); err != nil {
		return nil, err
	}
	// next is the stored object with the caller's status: a shallow copy
	// of this call's own decoding, which encoding only reads.
	next := reflect.New(reflect.TypeOf(cur).Elem())
	next.Elem().Set(reflect.ValueOf(cur).Elem())
	next.Elem().FieldByIndex(status).Set(reflect.ValueOf(obj).Elem().FieldByIndex(status))
	value, err := encode(next.Interface().(api.Object))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if bytes.Equal(value, kv.Value) {
		return cur, nil
	}
	if opts.DryRun {
		return decodeValue(k, value, kv.ModRevision)
	}
	return s.put(ctx, op, k, kv, value)
}

// statusIndex is the index of the Status field of obj's type, or nil for
// a kind without one.
func statusIndex(obj api.Object) []int {
	t := reflect.TypeOf(obj)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	f, ok := t.Elem().FieldByName("Status")
	if !ok || !strings.HasPrefix(f.Tag.Get("json"), "status,") {
		return nil
	}
	return f.Index
}

// updateStatusJSON is UpdateStatus for a kind whose status is not a Status
// field: the status is moved over as JSON.
func (s *Store) updateStatusJSON(ctx context.Context, obj api.Object, opts WriteOptions) (api.Object, error) {
	k, o, err := ownCopy(obj)
	if err != nil {
		return nil, fmt.Errorf("update status: %w", err)
	}
	m := o.GetMeta()
	op := fmt.Sprintf("update status of %s %q", k.Singular, m.Name)
	if err := checkName(m.Name); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	cur, kv, oTop, err := s.readForWrite(ctx, op, k, o)
	if err != nil {
		return nil, err
	}
	next, err := replaceStatus(k, cur, oTop["status"])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	next.GetMeta().ResourceVersion = ""
	return s.replace(ctx, op, k, cur, next, kv, opts.DryRun)
}

// Delete deletes an object and returns its last state, with the
// resourceVersion of the deletion. An object with finalizers is only
// marked: its deletionTimestamp is set (once; later deletes change
// nothing) and it is returned as stored; it goes when an Update removes
// its last finalizer. A missing object is api.ErrNotFound; a stale
// opts.ResourceVersion is api.ErrConflict. Owned objects are left to the
// garbage collector.
func (s *Store) Delete(ctx context.Context, kind, name string, opts DeleteOptions) (api.Object, error) {
	k, err := lookupKind(kind)
	if err != nil {
		return nil, fmt.Errorf("delete %s %q: %w", kind, name, err)
	}
	op := fmt.Sprintf("delete %s %q", k.Singular, name)
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	want, err := parseResourceVersion(opts.ResourceVersion)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	key := s.key(k, name)
	// Without a precondition the caller wants the object gone whatever
	// its version, but a write that slipped in (say, a finalizer added)
	// must still be seen: retry on the new state rather than delete
	// blindly.
	for range maxDeleteAttempts {
		cur, kv, err := s.read(ctx, op, k, name)
		if err != nil {
			return nil, err
		}
		if want != 0 && kv.ModRevision != want {
			return nil, fmt.Errorf("%s: %w (stored version %d, precondition %d)", op, api.ErrConflict, kv.ModRevision, want)
		}
		var resp *clientv3.TxnResponse
		var value []byte
		cm := cur.GetMeta()
		switch {
		case len(cm.Finalizers) > 0 && cm.DeletionTimestamp != nil:
			return cur, nil
		case len(cm.Finalizers) > 0:
			now := time.Now().UTC().Truncate(time.Second)
			cm.DeletionTimestamp = &now
			if opts.DryRun {
				return cur, nil
			}
			if value, err = encode(cur); err != nil {
				return nil, fmt.Errorf("%s: %w", op, err)
			}
			resp, err = s.client.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
				Then(clientv3.OpPut(key, string(value))).
				Commit()
		default:
			if opts.DryRun {
				return cur, nil
			}
			resp, err = s.client.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
				Then(append([]clientv3.Op{clientv3.OpDelete(key)}, s.leaseGoes(k.Kind, name)...)...).
				Commit()
		}
		if err != nil {
			return nil, s.mapErr(op, err)
		}
		if !resp.Succeeded {
			if want != 0 {
				return nil, fmt.Errorf("%s: %w", op, api.ErrConflict)
			}
			continue
		}
		if value != nil {
			return decodeValue(k, value, resp.Header.Revision)
		}
		cm.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
		return cur, nil
	}
	return nil, fmt.Errorf("%s: %w: it changed %d times while being deleted", op, api.ErrConflict, maxDeleteAttempts)
}

// replace writes next over cur unless nothing changed, conditioned on the
// ModRevision cur was read at.
func (s *Store) replace(ctx context.Context, op string, k api.KindInfo, cur, next api.Object, kv *mvccpb.KeyValue, dryRun bool) (api.Object, error) {
	value, err := encode(next)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	old, err := encode(cur)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if bytes.Equal(value, old) {
		return cur, nil
	}
	if dryRun {
		return decodeValue(k, value, kv.ModRevision)
	}
	return s.put(ctx, op, k, kv, value)
}

// put writes value over kv if the key is still at kv's revision, and
// returns the object written.
func (s *Store) put(ctx context.Context, op string, k api.KindInfo, kv *mvccpb.KeyValue, value []byte) (api.Object, error) {
	key := string(kv.Key)
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return nil, s.mapErr(op, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: %w", op, api.ErrConflict)
	}
	return decodeValue(k, value, resp.Header.Revision)
}

// finalize deletes an object whose last finalizer an update removed,
// conditioned on the ModRevision it was read at, and returns last.
func (s *Store) finalize(ctx context.Context, op string, last api.Object, kv *mvccpb.KeyValue, dryRun bool) (api.Object, error) {
	if dryRun {
		last.GetMeta().ResourceVersion = strconv.FormatInt(kv.ModRevision, 10)
		return last, nil
	}
	key := string(kv.Key)
	m := last.GetMeta()
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(append([]clientv3.Op{clientv3.OpDelete(key)}, s.leaseGoes(last.GetTypeMeta().Kind, m.Name)...)...).
		Commit()
	if err != nil {
		return nil, s.mapErr(op, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: %w", op, api.ErrConflict)
	}
	last.GetMeta().ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return last, nil
}

// read returns the stored object with its key-value, or an error wrapping
// api.ErrNotFound.
func (s *Store) read(ctx context.Context, op string, k api.KindInfo, name string) (api.Object, *mvccpb.KeyValue, error) {
	resp, err := s.client.Get(ctx, s.key(k, name))
	if err != nil {
		return nil, nil, s.mapErr(op, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil, fmt.Errorf("%s: %w", op, api.ErrNotFound)
	}
	kv := resp.Kvs[0]
	obj, err := s.decode(k, kv)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	return obj, kv, nil
}

// checkPreconditions applies the resourceVersion precondition of a write
// and refuses a change of uid: an object from a deleted incarnation must
// not overwrite its successor.
// readForWrite reads what an update of o replaces, checks o's
// preconditions against it, and returns o's top-level fields: the steps
// Update and UpdateStatus share before each writes its own part.
func (s *Store) readForWrite(ctx context.Context, op string, k api.KindInfo, o api.Object) (api.Object, *mvccpb.KeyValue, map[string]json.RawMessage, error) {
	want, err := parseResourceVersion(o.GetMeta().ResourceVersion)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	cur, kv, err := s.read(ctx, op, k, o.GetMeta().Name)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkPreconditions(op, o, cur, kv, want); err != nil {
		return nil, nil, nil, err
	}
	oTop, err := topLevel(o)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	return cur, kv, oTop, nil
}

func checkPreconditions(op string, o, cur api.Object, kv *mvccpb.KeyValue, want int64) error {
	if want != 0 && want != kv.ModRevision {
		return fmt.Errorf("%s: %w (stored version %d, given %d)", op, api.ErrConflict, kv.ModRevision, want)
	}
	if uid := o.GetMeta().UID; uid != "" && uid != cur.GetMeta().UID {
		return api.ErrorList{{Type: api.FieldInvalid, Field: "metadata.uid",
			Detail: fmt.Sprintf("%q is not the stored object's uid %q: the field is immutable", uid, cur.GetMeta().UID)}}
	}
	return nil
}

func (s *Store) kindPrefix(k api.KindInfo) string { return s.prefix + k.Plural + "/" }

func (s *Store) key(k api.KindInfo, name string) string { return s.kindPrefix(k) + name }

// decode turns a stored key-value into an object whose resourceVersion is
// the key's ModRevision.
func (s *Store) decode(k api.KindInfo, kv *mvccpb.KeyValue) (api.Object, error) {
	obj, err := decodeValue(k, kv.Value, kv.ModRevision)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	if name := strings.TrimPrefix(string(kv.Key), s.kindPrefix(k)); obj.GetMeta().Name != name {
		return nil, fmt.Errorf("decode %s: the value names %q", kv.Key, obj.GetMeta().Name)
	}
	return obj, nil
}

// decodeValue decodes a stored value leniently (fields of a newer version
// are ignored) and sets its resourceVersion; rev 0 leaves it empty.
func decodeValue(k api.KindInfo, value []byte, rev int64) (api.Object, error) {
	obj := k.New()
	if err := json.Unmarshal(value, obj); err != nil {
		return nil, err
	}
	tm := obj.GetTypeMeta()
	if tm.Kind != k.Kind {
		return nil, fmt.Errorf("stored kind %q is not %s", tm.Kind, k.Kind)
	}
	if rev != 0 {
		obj.GetMeta().ResourceVersion = strconv.FormatInt(rev, 10)
	}
	return obj, nil
}

// encode returns obj's stored form: its JSON without resourceVersion,
// which every read derives from the key's ModRevision instead.
func encode(obj api.Object) ([]byte, error) {
	m := obj.GetMeta()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	defer func() { m.ResourceVersion = rv }()
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", obj.GetTypeMeta().Kind, err)
	}
	if len(data) > api.MaxObjectBytes {
		return nil, fmt.Errorf("%w: the object takes %d bytes, more than the limit of %d", api.ErrTooLarge, len(data), api.MaxObjectBytes)
	}
	return data, nil
}

// lookupKind resolves any name api.LookupKind accepts.
func lookupKind(kind string) (api.KindInfo, error) {
	k, ok := api.LookupKind(kind)
	if !ok {
		return api.KindInfo{}, fmt.Errorf("%w: unknown kind %q (known: %s)", api.ErrBadRequest, kind, strings.Join(api.KindNames(), ", "))
	}
	return k, nil
}

// ownCopy finds obj's kind from its Go type and returns a deep copy that
// the store may change, with its TypeMeta filled in.
func ownCopy(obj api.Object) (api.KindInfo, api.Object, error) {
	k, err := kindOf(obj)
	if err != nil {
		return api.KindInfo{}, nil, err
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return api.KindInfo{}, nil, fmt.Errorf("copy %s: %w", k.Kind, err)
	}
	o := k.New()
	if err := json.Unmarshal(data, o); err != nil {
		return api.KindInfo{}, nil, fmt.Errorf("copy %s: %w", k.Kind, err)
	}
	tm := o.GetTypeMeta()
	tm.Kind = k.Kind
	if tm.APIVersion == "" {
		tm.APIVersion = api.APIVersion
	}
	return k, o, nil
}

// kindOf is the kind the store serves obj as.
func kindOf(obj api.Object) (api.KindInfo, error) {
	if obj == nil || reflect.ValueOf(obj).Kind() == reflect.Pointer && reflect.ValueOf(obj).IsNil() {
		return api.KindInfo{}, fmt.Errorf("%w: no object", api.ErrBadRequest)
	}
	for _, c := range api.Kinds() {
		if reflect.TypeOf(c.New()) == reflect.TypeOf(obj) {
			if kind := obj.GetTypeMeta().Kind; kind != "" && kind != c.Kind {
				return api.KindInfo{}, fmt.Errorf("%w: a %s object says its kind is %q", api.ErrBadRequest, c.Kind, kind)
			}
			return c, nil
		}
	}
	return api.KindInfo{}, fmt.Errorf("%w: %T is not a kind the store serves", api.ErrBadRequest, obj)
}

// checkName refuses a name that could not be stored, so that a name like
// "a/b" never reaches into another key.
func checkName(name string) error {
	if err := api.ValidateName(name); err != nil {
		return fmt.Errorf("%w: %s", api.ErrBadRequest, err.Error())
	}
	return nil
}

// parseResourceVersion parses a resourceVersion; "" is 0, no precondition.
func parseResourceVersion(rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: resourceVersion %q is not a positive integer", api.ErrBadRequest, rv)
	}
	return n, nil
}

// topLevel splits obj's JSON into its top-level fields (apiVersion, kind,
// metadata, spec, status), each in the canonical form encoding/json
// produces, so that two specs compare equal exactly when their JSON does.
func topLevel(obj api.Object) (map[string]json.RawMessage, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// fromTopLevel builds an object of kind k from top-level JSON fields.
func fromTopLevel(k api.KindInfo, m map[string]json.RawMessage) (api.Object, error) {
	data, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	obj := k.New()
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// setField sets a top-level field, or removes it when raw is nil.
func setField(m map[string]json.RawMessage, name string, raw json.RawMessage) {
	if raw == nil {
		delete(m, name)
		return
	}
	m[name] = raw
}

// replaceStatus returns a copy of obj whose status is raw (none when nil).
// Status is handled as JSON because each kind has its own status type.
func replaceStatus(k api.KindInfo, obj api.Object, raw json.RawMessage) (api.Object, error) {
	m, err := topLevel(obj)
	if err != nil {
		return nil, err
	}
	setField(m, "status", raw)
	return fromTopLevel(k, m)
}

// newUID returns a random (version 4) UUID.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
