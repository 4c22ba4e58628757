// Package accounts keeps the people who use Control: users with a role
// and an argon2id password hash, and their server-side login sessions. It
// stores them in Control's etcd under their own key prefix, beside (not
// among) the served kinds, so the generic REST API can never return a
// password hash. It also rate-limits logins per account and per client
// address. It imports api, credential, store and the etcd client; HTTP
// lives in internal/apiserver.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"sort"
	"strings"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config configures a Service.
type Config struct {
	// Store is Control's store: users and sessions live in its etcd, and
	// tokens minted for the CLI are created in it. Required.
	Store *store.Store
	// Prefix starts every key of users and sessions; "" means
	// store.DefaultPrefix + "accounts/". Control passes its store's prefix
	// + "accounts/" so that two installations sharing a cluster stay apart.
	Prefix string
	// Logger receives failed logins and setup; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil uses time.Now. Tests set it.
	Now func() time.Time
	// IdleTimeout ends a session not used for this long; zero means 12 h.
	IdleTimeout time.Duration
	// MaxAge ends a session this long after login, however busy; zero
	// means 7 days.
	MaxAge time.Duration
	// Hash are argon2id's costs for new hashes; the zero value means
	// DefaultHashParams.
	Hash HashParams
	// LoginPerMinute and LoginBurst limit login attempts per account
	// name; zero means 5 per minute with a burst of 5.
	LoginPerMinute, LoginBurst int
	// AddrPerMinute and AddrBurst limit login attempts per client address;
	// zero means 20 per minute with a burst of 20.
	AddrPerMinute, AddrBurst int
	// MaxConcurrentHashes bounds how many argon2id computations (46 MiB
	// each by default) run at once; zero means 4.
	MaxConcurrentHashes int
}

// User is a person who logs in. The password hash is kept apart (see
// storedUser), so a User can be served as it is.
type User struct {
	// Name logs in; lower-case letters, digits and '-'.
	Name string `json:"name"`
	// Role is admin, editor or viewer, as for tokens.
	Role api.Role `json:"role"`
	// Email is optional, for people to recognise each other.
	Email string `json:"email,omitempty"`
	// Disabled users cannot log in, and their sessions stop working.
	Disabled bool `json:"disabled,omitempty"`
	// CreatedAt is when the account was made.
	CreatedAt time.Time `json:"createdAt"`
	// CreatedBy names who made it ("setup" for the first admin).
	CreatedBy string `json:"createdBy,omitempty"`
}

// storedUser is a User with its password hash, as written to etcd.
type storedUser struct {
	User
	PasswordHash string `json:"passwordHash"`
}

// NewUser is what CreateUser and Setup take.
type NewUser struct {
	Name     string   `json:"name"`
	Role     api.Role `json:"role"`
	Email    string   `json:"email,omitempty"`
	Password string   `json:"password"`
}

// UserUpdate changes a user; nil fields are left alone.
type UserUpdate struct {
	Role     *api.Role `json:"role,omitempty"`
	Email    *string   `json:"email,omitempty"`
	Disabled *bool     `json:"disabled,omitempty"`
	Password *string   `json:"password,omitempty"`
}

// Session is a logged-in browser. Its id is only in the cookie; the store
// keys it by the id's SHA-256, so reading etcd does not hand out sessions.
type Session struct {
	// User is who logged in; Role is read from the user on every request,
	// so a changed role or a disabled account takes effect at once.
	User string   `json:"user"`
	Role api.Role `json:"-"`
	CSRF string   `json:"csrf"`
	// CreatedAt is the login; LastSeen the last request that slid expiry.
	CreatedAt time.Time `json:"createdAt"`
	LastSeen  time.Time `json:"lastSeen"`
}

// RateLimitedError says a login was refused for too many attempts.
type RateLimitedError struct {
	// RetryAfter is how long until another attempt is accepted.
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("too many login attempts; try again in %d s", int(e.RetryAfter.Seconds()+0.999))
}

// ErrBadCredentials is the single answer to an unknown user, a wrong
// password and a disabled account, so the answer tells an attacker
// nothing about which names exist.
var ErrBadCredentials = api.NewStatusError(api.ReasonUnauthorized, "wrong username or password")

var errSetupDone = api.NewStatusError(api.ReasonAlreadyExists, "set up the first account: it exists already; log in, or ask an admin for an account")

// errSessionInvalid is the answer for every unusable session cookie.
var errSessionInvalid = api.NewStatusError(api.ReasonUnauthorized, "the session has expired or was ended; log in again")

// Service manages users and sessions.
type Service struct {
	st      *store.Store
	kv      *clientv3.Client
	prefix  string
	log     *slog.Logger
	now     func() time.Time
	idle    time.Duration
	maxAge  time.Duration
	hash    HashParams
	perUser *limiter
	perAddr *limiter
	// signups limits sign-ups per client address, apart from logins, so
	// signing up does not spend an office's login attempts.
	signups *limiter
	hashing chan struct{} // a semaphore: one slot per running argon2id
	// dummyHash is verified for unknown users so they take as long as
	// known ones.
	dummyHash string
}

// New builds a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("accounts: a store is required")
	}
	s := &Service{st: cfg.Store, kv: cfg.Store.Client(), prefix: cfg.Prefix, log: cfg.Logger, now: cfg.Now,
		idle: cfg.IdleTimeout, maxAge: cfg.MaxAge, hash: cfg.Hash}
	if s.prefix == "" {
		s.prefix = store.DefaultPrefix + "accounts/"
	}
	if !strings.HasSuffix(s.prefix, "/") {
		s.prefix += "/"
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.idle == 0 {
		s.idle = 12 * time.Hour
	}
	if s.maxAge == 0 {
		s.maxAge = 7 * 24 * time.Hour
	}
	if s.hash == (HashParams{}) {
		s.hash = DefaultHashParams
	}
	orDefault := func(v, d int) int {
		if v <= 0 {
			return d
		}
		return v
	}
	s.perUser = newLimiter(orDefault(cfg.LoginPerMinute, 5), orDefault(cfg.LoginBurst, 5), 100000)
	s.perAddr = newLimiter(orDefault(cfg.AddrPerMinute, 20), orDefault(cfg.AddrBurst, 20), 100000)
	s.signups = newLimiter(orDefault(cfg.AddrPerMinute, 20), orDefault(cfg.AddrBurst, 20), 100000)
	s.hashing = make(chan struct{}, orDefault(cfg.MaxConcurrentHashes, 4))
	var err error
	if s.dummyHash, err = HashPassword("not a password anyone has", s.hash); err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return s, nil
}

func (s *Service) userKey(name string) string { return s.prefix + "users/" + name }
func (s *Service) sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return s.prefix + "sessions/" + hex.EncodeToString(sum[:])
}
func (s *Service) setupKey() string { return s.prefix + "setup-done" }

// withHashSlot runs fn while holding one of the argon2id slots.
func (s *Service) withHashSlot(ctx context.Context, fn func() error) error {
	select {
	case s.hashing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.hashing }()
	return fn()
}

func (s *Service) hashPassword(ctx context.Context, pw string) (string, error) {
	var h string
	err := s.withHashSlot(ctx, func() error {
		var err error
		h, err = HashPassword(pw, s.hash)
		return err
	})
	return h, err
}

func validateNewUser(u NewUser) error {
	var errs api.ErrorList
	var nameErrs api.ErrorList
	if errors.As(api.ValidateName(u.Name), &nameErrs) {
		for _, fe := range nameErrs {
			fe.Field = "name"
			errs = append(errs, fe)
		}
	}
	errs = append(errs, validateRole(u.Role)...)
	errs = append(errs, validateEmail(u.Email)...)
	errs = append(errs, validatePassword(u.Password)...)
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func validateRole(r api.Role) api.ErrorList {
	switch r {
	case api.RoleAdmin, api.RoleEditor, api.RoleViewer:
		return nil
	case "":
		return api.ErrorList{{Type: api.FieldRequired, Field: "role", Detail: "admin, editor or viewer"}}
	}
	return api.ErrorList{{Type: api.FieldNotSupported, Field: "role", Detail: fmt.Sprintf("unsupported role %q (use admin, editor or viewer)", r)}}
}

func validateEmail(e string) api.ErrorList {
	if e == "" {
		return nil
	}
	if a, err := mail.ParseAddress(e); err != nil || a.Address != e || len(e) > 254 {
		return api.ErrorList{{Type: api.FieldInvalid, Field: "email", Detail: fmt.Sprintf("%q is not an email address", e)}}
	}
	return nil
}

func validatePassword(p string) api.ErrorList {
	switch {
	case len(p) < MinPasswordLen:
		return api.ErrorList{{Type: api.FieldInvalid, Field: "password", Detail: fmt.Sprintf("shorter than %d characters", MinPasswordLen)}}
	case len(p) > MaxPasswordLen:
		return api.ErrorList{{Type: api.FieldTooLong, Field: "password", Detail: fmt.Sprintf("longer than %d characters", MaxPasswordLen)}}
	}
	return nil
}

// SetupNeeded reports whether the first account is still to be made.
func (s *Service) SetupNeeded(ctx context.Context) (bool, error) {
	resp, err := s.kv.Get(ctx, s.setupKey(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("read setup state: %w", err)
	}
	return resp.Count == 0, nil
}

// Setup makes the first account, an admin, once: the caller proves it may
// by presenting an admin token, normally the bootstrap token from the data
// directory. Once done, Setup answers AlreadyExists for ever, even if every
// user is later deleted.
func (s *Service) Setup(ctx context.Context, adminToken string, u NewUser) (User, error) {
	// Said first, so an admin with a session (who has no token at hand)
	// learns that setup is done rather than that a token is missing.
	if need, err := s.SetupNeeded(ctx); err != nil {
		return User{}, fmt.Errorf("set up the first account: %w", err)
	} else if !need {
		return User{}, errSetupDone
	}
	p, err := credential.Authenticate(ctx, s.st.Get, "Bearer "+strings.TrimSpace(adminToken), s.now())
	if err != nil {
		return User{}, fmt.Errorf("set up the first account: %w", err)
	}
	if p.Role != api.RoleAdmin {
		return User{}, api.NewStatusError(api.ReasonForbidden, "set up the first account: the token must be an admin token, such as the bootstrap token")
	}
	u.Role = api.RoleAdmin
	if err := validateNewUser(u); err != nil {
		return User{}, fmt.Errorf("set up the first account: %w", err)
	}
	hash, err := s.hashPassword(ctx, u.Password)
	if err != nil {
		return User{}, fmt.Errorf("set up the first account: %w", err)
	}
	su := storedUser{User: User{Name: u.Name, Role: api.RoleAdmin, Email: u.Email, CreatedAt: s.now().UTC(), CreatedBy: "setup"}, PasswordHash: hash}
	data, _ := json.Marshal(su)
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.setupKey()), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.userKey(u.Name)), "=", 0)).
		Then(clientv3.OpPut(s.setupKey(), su.CreatedAt.Format(time.RFC3339)), clientv3.OpPut(s.userKey(u.Name), string(data))).
		Commit()
	if err != nil {
		return User{}, fmt.Errorf("set up the first account: %w", err)
	}
	if !resp.Succeeded {
		return User{}, errSetupDone
	}
	s.log.Info("first account created", "user", u.Name, "token", p.Name)
	return su.User, nil
}

// CreateUser adds a user; by names who did it.
func (s *Service) CreateUser(ctx context.Context, u NewUser, by string) (User, error) {
	if err := validateNewUser(u); err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	hash, err := s.hashPassword(ctx, u.Password)
	if err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	su := storedUser{User: User{Name: u.Name, Role: u.Role, Email: u.Email, CreatedAt: s.now().UTC(), CreatedBy: by}, PasswordHash: hash}
	data, _ := json.Marshal(su)
	resp, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.userKey(u.Name)), "=", 0)).
		Then(clientv3.OpPut(s.userKey(u.Name), string(data))).Commit()
	if err != nil {
		return User{}, fmt.Errorf("create user %s: %w", u.Name, err)
	}
	if !resp.Succeeded {
		return User{}, api.NewStatusError(api.ReasonAlreadyExists, "create user: %q exists already", u.Name)
	}
	return su.User, nil
}

func (s *Service) readUser(ctx context.Context, name string) (storedUser, int64, error) {
	if api.ValidateName(name) != nil {
		return storedUser{}, 0, api.NewStatusError(api.ReasonNotFound, "user %q not found", name)
	}
	resp, err := s.kv.Get(ctx, s.userKey(name))
	if err != nil {
		return storedUser{}, 0, fmt.Errorf("read user %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return storedUser{}, 0, api.NewStatusError(api.ReasonNotFound, "user %q not found", name)
	}
	var su storedUser
	if err := json.Unmarshal(resp.Kvs[0].Value, &su); err != nil {
		return storedUser{}, 0, fmt.Errorf("decode user %s: %w", name, err)
	}
	return su, resp.Kvs[0].ModRevision, nil
}

// GetUser reads one user.
func (s *Service) GetUser(ctx context.Context, name string) (User, error) {
	su, _, err := s.readUser(ctx, name)
	return su.User, err
}

// ListUsers returns every user, by name.
func (s *Service) ListUsers(ctx context.Context) ([]User, error) {
	resp, err := s.kv.Get(ctx, s.prefix+"users/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := make([]User, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var su storedUser
		if err := json.Unmarshal(kv.Value, &su); err != nil {
			return nil, fmt.Errorf("list users: decode %s: %w", kv.Key, err)
		}
		out = append(out, su.User)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// UpdateUser changes a user. The write is conditional on the version read,
// so two admins editing at once get a Conflict rather than a lost change.
// A new password or disabling the account ends every session of the user.
func (s *Service) UpdateUser(ctx context.Context, name string, up UserUpdate) (User, error) {
	return s.updateUser(ctx, name, up, "")
}

// updateUser is UpdateUser keeping the session keepSession ("" for none)
// when the password changes.
func (s *Service) updateUser(ctx context.Context, name string, up UserUpdate, keepSession string) (User, error) {
	su, rev, err := s.readUser(ctx, name)
	if err != nil {
		return User{}, fmt.Errorf("update user: %w", err)
	}
	var errs api.ErrorList
	if up.Role != nil {
		errs = append(errs, validateRole(*up.Role)...)
		su.Role = *up.Role
	}
	if up.Email != nil {
		errs = append(errs, validateEmail(*up.Email)...)
		su.Email = *up.Email
	}
	if up.Disabled != nil {
		su.Disabled = *up.Disabled
	}
	if up.Password != nil {
		errs = append(errs, validatePassword(*up.Password)...)
	}
	if len(errs) > 0 {
		return User{}, fmt.Errorf("update user %s: %w", name, errs)
	}
	if up.Password != nil {
		if su.PasswordHash, err = s.hashPassword(ctx, *up.Password); err != nil {
			return User{}, fmt.Errorf("update user %s: %w", name, err)
		}
	}
	data, _ := json.Marshal(su)
	resp, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.userKey(name)), "=", rev)).
		Then(clientv3.OpPut(s.userKey(name), string(data))).Commit()
	if err != nil {
		return User{}, fmt.Errorf("update user %s: %w", name, err)
	}
	if !resp.Succeeded {
		return User{}, api.NewStatusError(api.ReasonConflict, "update user %s: it changed meanwhile; read it again and retry", name)
	}
	if up.Password != nil || su.Disabled {
		// Whoever knew the old password, or used the account, is out.
		if _, err := s.EndSessions(ctx, name, keepSession); err != nil {
			return su.User, err
		}
	}
	return su.User, nil
}

// checkPassword verifies name's password within the rate limits. Every
// failure but a rate limit or a store error is ErrBadCredentials.
func (s *Service) checkPassword(ctx context.Context, name, password, addr string) (User, error) {
	now := s.now()
	// Both buckets are charged before anything is checked, so probing
	// many names from one address and one name from many addresses are
	// both slowed.
	okAddr, waitAddr := s.perAddr.take(addr, now)
	okUser, waitUser := s.perUser.take(strings.ToLower(name), now)
	if !okAddr || !okUser {
		s.log.Warn("login rate limited", "user", name, "addr", addr)
		return User{}, &RateLimitedError{RetryAfter: max(waitAddr, waitUser)}
	}
	if len(password) > MaxPasswordLen {
		return User{}, ErrBadCredentials
	}
	su, _, err := s.readUser(ctx, name)
	hash := su.PasswordHash
	switch {
	case errors.Is(err, api.ErrNotFound):
		hash = s.dummyHash
	case err != nil:
		return User{}, err
	}
	var ok bool
	if err := s.withHashSlot(ctx, func() error {
		var err error
		ok, err = VerifyPassword(hash, password)
		return err
	}); err != nil {
		return User{}, fmt.Errorf("check password of %s: %w", name, err)
	}
	if su.Name == "" || !ok || su.Disabled {
		s.log.Info("login refused", "user", name, "addr", addr)
		return User{}, ErrBadCredentials
	}
	return su.User, nil
}

func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Login checks a password and starts a session. It returns the session's
// id, for the cookie, which is never stored. addr is the client's address
// for rate limiting. A new id is made at every login (the id a browser
// had before is not reused), so a planted session cookie gains nothing.
func (s *Service) Login(ctx context.Context, name, password, addr string) (string, Session, error) {
	u, err := s.checkPassword(ctx, name, password, addr)
	if err != nil {
		return "", Session{}, err
	}
	id, err := randomString()
	if err != nil {
		return "", Session{}, err
	}
	csrf, err := randomString()
	if err != nil {
		return "", Session{}, err
	}
	now := s.now().UTC()
	sess := Session{User: u.Name, Role: u.Role, CSRF: csrf, CreatedAt: now, LastSeen: now}
	// The lease lets etcd delete a session at its absolute end even if
	// nobody logs out; idle expiry is checked on read.
	lease, err := s.kv.Grant(ctx, int64(s.maxAge.Seconds())+60)
	if err != nil {
		return "", Session{}, fmt.Errorf("start session: %w", err)
	}
	data, _ := json.Marshal(sess)
	if _, err := s.kv.Put(ctx, s.sessionKey(id), string(data), clientv3.WithLease(lease.ID)); err != nil {
		return "", Session{}, fmt.Errorf("start session: %w", err)
	}
	s.log.Info("logged in", "user", u.Name, "addr", addr)
	return id, sess, nil
}

// Authenticate resolves a session id to its session, sliding its idle
// expiry forward. An unknown, expired or ended session, or one whose user
// is disabled or gone, is Unauthorized.
func (s *Service) Authenticate(ctx context.Context, id string) (Session, error) {
	if id == "" || len(id) > 100 {
		return Session{}, errSessionInvalid
	}
	key := s.sessionKey(id)
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return Session{}, fmt.Errorf("read session: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Session{}, errSessionInvalid
	}
	var sess Session
	if err := json.Unmarshal(resp.Kvs[0].Value, &sess); err != nil {
		return Session{}, fmt.Errorf("decode session: %w", err)
	}
	now := s.now()
	if now.Sub(sess.LastSeen) > s.idle || now.Sub(sess.CreatedAt) > s.maxAge {
		s.kv.Delete(ctx, key)
		return Session{}, errSessionInvalid
	}
	u, _, err := s.readUser(ctx, sess.User)
	if errors.Is(err, api.ErrNotFound) || (err == nil && u.Disabled) {
		return Session{}, errSessionInvalid
	}
	if err != nil {
		return Session{}, err
	}
	sess.Role = u.Role
	// Slide the expiry, but write at most once a minute per session: a
	// page with live updates must not turn every request into a write.
	if now.Sub(sess.LastSeen) > time.Minute {
		sess.LastSeen = now.UTC()
		data, _ := json.Marshal(sess)
		lease := clientv3.LeaseID(resp.Kvs[0].Lease)
		if _, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(data), clientv3.WithLease(lease))).Commit(); err != nil {
			s.log.Warn("could not extend a session", "user", sess.User, "err", err)
		}
	}
	return sess, nil
}

// Logout ends a session; ending one that is already gone is fine.
func (s *Service) Logout(ctx context.Context, id string) error {
	if id == "" || len(id) > 100 {
		return nil
	}
	if _, err := s.kv.Delete(ctx, s.sessionKey(id)); err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	return nil
}

// UserLabel names, on a token minted by MintToken, the user it was
// minted for.
const UserLabel = "kakuremichi.io/user"

// MaxCLITokenTTL bounds the lifetime of tokens minted by MintToken.
const MaxCLITokenTTL = 90 * 24 * time.Hour

// MintToken checks a password, like Login, and creates an API token with
// the user's role that expires after ttl (zero or more than MaxCLITokenTTL
// means MaxCLITokenTTL). It returns the bearer string, shown only now. The
// token keeps the role the user had when it was made; revoke it through
// the tokens API.
func (s *Service) MintToken(ctx context.Context, name, password, addr string, ttl time.Duration) (string, *api.Token, error) {
	u, err := s.checkPassword(ctx, name, password, addr)
	if err != nil {
		return "", nil, err
	}
	if ttl <= 0 || ttl > MaxCLITokenTTL {
		ttl = MaxCLITokenTTL
	}
	secret, err := credential.NewSecret()
	if err != nil {
		return "", nil, err
	}
	suffix, err := randomString()
	if err != nil {
		return "", nil, err
	}
	tokName := fmt.Sprintf("user-%s-%s", u.Name, strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(suffix))[:8])
	if len(tokName) > 63 {
		tokName = "user-" + strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(suffix))[:16]
	}
	exp := s.now().Add(ttl).UTC().Truncate(time.Second)
	tok := &api.Token{
		TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
		Metadata: api.ObjectMeta{Name: tokName, Labels: map[string]string{UserLabel: u.Name}},
		Spec: api.TokenSpec{Role: u.Role, ExpiresAt: &exp, SecretHash: credential.Hash(secret),
			Description: "kakuremichictl login of " + u.Name + " from " + addr},
	}
	created, err := s.st.Create(ctx, tok, store.WriteOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("mint token for %s: %w", u.Name, err)
	}
	return api.FormatToken(tokName, secret), created.(*api.Token), nil
}
