package accounts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Settings are the installation's account settings, changed by admins.
type Settings struct {
	// OpenRegistration lets anyone who reaches Control sign up, as a
	// viewer. Off (the default), only an invite lets someone sign up.
	OpenRegistration bool `json:"openRegistration"`
	// UpdatedAt and UpdatedBy say when and by whom they were last changed.
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	UpdatedBy string    `json:"updatedBy,omitempty"`
}

// Invite lets one person sign up with a role chosen by an admin. The
// link's secret is shown once, when the invite is made; only its hash is
// stored. An invite works once and expires.
type Invite struct {
	// ID names the invite in lists; it is not the secret.
	ID        string    `json:"id"`
	Role      api.Role  `json:"role"`
	CreatedBy string    `json:"createdBy"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

type storedInvite struct {
	Invite
	SecretHash string `json:"secretHash"`
}

// InvitePrefix starts every invite code, so a leaked one is recognisable.
const InvitePrefix = "kki_"

// Lifetimes of invites.
const (
	DefaultInviteTTL = 7 * 24 * time.Hour
	MaxInviteTTL     = 30 * 24 * time.Hour
)

// errInviteInvalid is the one answer for an unknown, used, expired or
// malformed invite, so the answer tells a guesser nothing.
var errInviteInvalid = api.NewStatusError(api.ReasonForbidden, "the invite is unknown, used or expired; ask an admin for a new one")

// errRegistrationClosed refuses a sign-up without an invite.
var errRegistrationClosed = api.NewStatusError(api.ReasonForbidden, "registration is by invite only; ask an admin for an invite link")

func (s *Service) settingsKey() string        { return s.prefix + "settings" }
func (s *Service) inviteKey(id string) string { return s.prefix + "invites/" + id }

// Settings reads the account settings; never set means the defaults.
func (s *Service) Settings(ctx context.Context) (Settings, error) {
	resp, err := s.kv.Get(ctx, s.settingsKey())
	if err != nil {
		return Settings{}, fmt.Errorf("read account settings: %w", err)
	}
	var st Settings
	if len(resp.Kvs) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		return Settings{}, fmt.Errorf("decode account settings: %w", err)
	}
	return st, nil
}

// SetOpenRegistration opens or closes registration; by names the admin.
func (s *Service) SetOpenRegistration(ctx context.Context, open bool, by string) (Settings, error) {
	st := Settings{OpenRegistration: open, UpdatedAt: s.now().UTC(), UpdatedBy: by}
	data, _ := json.Marshal(st)
	if _, err := s.kv.Put(ctx, s.settingsKey(), string(data)); err != nil {
		return Settings{}, fmt.Errorf("save account settings: %w", err)
	}
	s.log.Info("registration changed", "open", open, "by", by)
	return st, nil
}

// CreateInvite makes a single-use invite for role that expires after ttl
// (zero means DefaultInviteTTL; more than MaxInviteTTL is refused). It
// returns the code, shown only now, to put in the sign-up link.
func (s *Service) CreateInvite(ctx context.Context, role api.Role, ttl time.Duration, by string) (string, Invite, error) {
	errs := validateRole(role)
	if ttl == 0 {
		ttl = DefaultInviteTTL
	}
	if ttl < time.Minute || ttl > MaxInviteTTL {
		errs = append(errs, api.FieldError{Type: api.FieldInvalid, Field: "expires",
			Detail: fmt.Sprintf("%s is not between a minute and %d days", ttl, int(MaxInviteTTL.Hours()/24))})
	}
	if len(errs) > 0 {
		return "", Invite{}, fmt.Errorf("create invite: %w", errs)
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", Invite{}, fmt.Errorf("create invite: %w", err)
	}
	secret, err := credential.NewSecret()
	if err != nil {
		return "", Invite{}, fmt.Errorf("create invite: %w", err)
	}
	now := s.now().UTC().Truncate(time.Second)
	inv := storedInvite{Invite: Invite{ID: hex.EncodeToString(b), Role: role, CreatedBy: by, CreatedAt: now, ExpiresAt: now.Add(ttl)},
		SecretHash: credential.Hash(secret)}
	// The lease lets etcd forget an unused invite after it expires.
	lease, err := s.kv.Grant(ctx, int64(ttl.Seconds())+60)
	if err != nil {
		return "", Invite{}, fmt.Errorf("create invite: %w", err)
	}
	data, _ := json.Marshal(inv)
	if _, err := s.kv.Put(ctx, s.inviteKey(inv.ID), string(data), clientv3.WithLease(lease.ID)); err != nil {
		return "", Invite{}, fmt.Errorf("create invite: %w", err)
	}
	s.log.Info("invite created", "id", inv.ID, "role", role, "by", by)
	return InvitePrefix + inv.ID + "." + secret, inv.Invite, nil
}

// ListInvites returns the invites not yet used or expired, newest first.
func (s *Service) ListInvites(ctx context.Context) ([]Invite, error) {
	resp, err := s.kv.Get(ctx, s.prefix+"invites/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list invites: %w", err)
	}
	now := s.now()
	out := []Invite{}
	for _, kv := range resp.Kvs {
		var inv storedInvite
		if err := json.Unmarshal(kv.Value, &inv); err != nil {
			return nil, fmt.Errorf("list invites: decode %s: %w", kv.Key, err)
		}
		if now.Before(inv.ExpiresAt) {
			out = append(out, inv.Invite)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// RevokeInvite deletes an invite, so its link stops working.
func (s *Service) RevokeInvite(ctx context.Context, id string) error {
	if !validInviteID(id) {
		return api.NewStatusError(api.ReasonNotFound, "invite %q not found", id)
	}
	resp, err := s.kv.Delete(ctx, s.inviteKey(id))
	if err != nil {
		return fmt.Errorf("revoke invite %s: %w", id, err)
	}
	if resp.Deleted == 0 {
		return api.NewStatusError(api.ReasonNotFound, "invite %q not found", id)
	}
	return nil
}

func validInviteID(id string) bool {
	if len(id) != 16 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// readInvite resolves a code to its invite and the revision it was read
// at; every failure is errInviteInvalid but a store error.
func (s *Service) readInvite(ctx context.Context, code string) (storedInvite, int64, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(code), InvitePrefix)
	id, secret, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || !validInviteID(id) || secret == "" {
		return storedInvite{}, 0, errInviteInvalid
	}
	resp, err := s.kv.Get(ctx, s.inviteKey(id))
	if err != nil {
		return storedInvite{}, 0, fmt.Errorf("read invite: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return storedInvite{}, 0, errInviteInvalid
	}
	var inv storedInvite
	if err := json.Unmarshal(resp.Kvs[0].Value, &inv); err != nil {
		return storedInvite{}, 0, fmt.Errorf("decode invite %s: %w", id, err)
	}
	if !credential.Matches(inv.SecretHash, secret) || !s.now().Before(inv.ExpiresAt) {
		return storedInvite{}, 0, errInviteInvalid
	}
	return inv, resp.Kvs[0].ModRevision, nil
}

// CheckInvite reports the invite a code names, without using it, so the
// sign-up page can say which role it grants.
func (s *Service) CheckInvite(ctx context.Context, code string) (Invite, error) {
	inv, _, err := s.readInvite(ctx, code)
	return inv.Invite, err
}

// Register signs someone up: with an invite code, with the invite's role,
// using the invite up in the same transaction that creates the user; with
// no code, as a viewer, only while registration is open. Role in u is
// ignored. Attempts are limited per client address, as logins are.
func (s *Service) Register(ctx context.Context, code string, u NewUser, addr string) (User, error) {
	if ok, wait := s.signups.take(addr, s.now()); !ok {
		return User{}, &RateLimitedError{RetryAfter: wait}
	}
	if need, err := s.SetupNeeded(ctx); err != nil {
		return User{}, err
	} else if need {
		return User{}, errRegistrationClosed
	}
	var inv storedInvite
	var invRev int64
	by := "sign-up"
	if code != "" {
		var err error
		if inv, invRev, err = s.readInvite(ctx, code); err != nil {
			return User{}, err
		}
		u.Role, by = inv.Role, "invite of "+inv.CreatedBy
	} else {
		st, err := s.Settings(ctx)
		if err != nil {
			return User{}, err
		}
		if !st.OpenRegistration {
			return User{}, errRegistrationClosed
		}
		u.Role = api.RoleViewer
	}
	if err := validateNewUser(u); err != nil {
		return User{}, fmt.Errorf("sign up: %w", err)
	}
	hash, err := s.hashPassword(ctx, u.Password)
	if err != nil {
		return User{}, fmt.Errorf("sign up: %w", err)
	}
	su := storedUser{User: User{Name: u.Name, Role: u.Role, Email: u.Email, CreatedAt: s.now().UTC(), CreatedBy: by}, PasswordHash: hash}
	data, _ := json.Marshal(su)
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.userKey(u.Name)), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(s.userKey(u.Name), string(data))}
	if code != "" {
		// The invite must be the one read, unused: two sign-ups racing
		// with one link make one account.
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(s.inviteKey(inv.ID)), "=", invRev))
		ops = append(ops, clientv3.OpDelete(s.inviteKey(inv.ID)))
	}
	resp, err := s.kv.Txn(ctx).If(conds...).Then(ops...).Commit()
	if err != nil {
		return User{}, fmt.Errorf("sign up %s: %w", u.Name, err)
	}
	if !resp.Succeeded {
		if _, _, err := s.readUser(ctx, u.Name); err == nil {
			return User{}, api.ErrorList{{Type: api.FieldDuplicate, Field: "name", Detail: fmt.Sprintf("%q is taken; choose another name", u.Name)}}
		}
		return User{}, errInviteInvalid
	}
	s.log.Info("signed up", "user", u.Name, "role", u.Role, "invite", inv.ID, "addr", addr)
	return su.User, nil
}

// ChangePassword sets name's password after checking the current one
// (rate limited like a login), then ends every other session of the user:
// whoever else had the old password is logged out. keepSession is the id
// of the session that asked, which stays.
func (s *Service) ChangePassword(ctx context.Context, name, current, newPassword, addr, keepSession string) error {
	if errs := validatePassword(newPassword); len(errs) > 0 {
		return fmt.Errorf("change password: %w", errs)
	}
	if _, err := s.checkPassword(ctx, name, current, addr); err != nil {
		if errors.Is(err, ErrBadCredentials) {
			return api.ErrorList{{Type: api.FieldInvalid, Field: "current", Detail: "this is not your current password"}}
		}
		return err
	}
	if _, err := s.updateUser(ctx, name, UserUpdate{Password: &newPassword}, keepSession); err != nil {
		return err
	}
	s.log.Info("password changed", "user", name, "addr", addr)
	return nil
}

// EndSessions ends every session of user except the one with id except
// ("" ends all), and returns how many it ended.
func (s *Service) EndSessions(ctx context.Context, user, except string) (int, error) {
	resp, err := s.kv.Get(ctx, s.prefix+"sessions/", clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("end sessions of %s: %w", user, err)
	}
	keep := ""
	if except != "" {
		keep = s.sessionKey(except)
	}
	n := 0
	for _, kv := range resp.Kvs {
		var sess Session
		if json.Unmarshal(kv.Value, &sess) != nil || sess.User != user || string(kv.Key) == keep {
			continue
		}
		if _, err := s.kv.Delete(ctx, string(kv.Key)); err != nil {
			return n, fmt.Errorf("end sessions of %s: %w", user, err)
		}
		n++
	}
	return n, nil
}
