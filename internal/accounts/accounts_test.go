package accounts

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/credential"
	"github.com/kakuremichi/kakuremichi/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// clock is a settable time source for expiry and rate limits.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	st     *store.Store
	svc    *Service
	clk    *clock
	tokens map[api.Role]string
}

// cheap keeps argon2id fast in tests of everything but hashing itself.
var cheap = HashParams{Memory: 1024, Time: 1, Threads: 1}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	svc, err := New(Config{Store: st, Now: clk.Now, Hash: cheap})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, svc: svc, clk: clk, tokens: map[api.Role]string{}}
	for _, role := range []api.Role{api.RoleAdmin, api.RoleViewer} {
		secret, _ := credential.NewSecret()
		name := "t-" + string(role)
		_, err := st.Create(ctx, &api.Token{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: "Token"},
			Metadata: api.ObjectMeta{Name: name}, Spec: api.TokenSpec{Role: role, SecretHash: credential.Hash(secret)}}, store.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[role] = api.FormatToken(name, secret)
	}
	return e
}

func TestSetupOnlyOnceAndOnlyWithAnAdminToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if need, err := e.svc.SetupNeeded(ctx); err != nil || !need {
		t.Fatalf("fresh store: got setupNeeded=%v err=%v, want true", need, err)
	}
	first := NewUser{Name: "alice", Password: "a long passphrase", Email: "alice@example.com"}
	for _, tc := range []struct {
		name, token string
		user        NewUser
		want        error
	}{
		{"no token", "", first, api.ErrUnauthorized},
		{"wrong token", e.tokens[api.RoleAdmin] + "x", first, api.ErrUnauthorized},
		{"viewer token", e.tokens[api.RoleViewer], first, api.ErrForbidden},
		{"short password", e.tokens[api.RoleAdmin], NewUser{Name: "alice", Password: "short"}, api.ErrInvalid},
		{"bad name", e.tokens[api.RoleAdmin], NewUser{Name: "Alice!", Password: "a long passphrase"}, api.ErrInvalid},
	} {
		if _, err := e.svc.Setup(ctx, tc.token, tc.user); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	u, err := e.svc.Setup(ctx, e.tokens[api.RoleAdmin], first)
	if err != nil {
		t.Fatalf("setup: got %v, want success", err)
	}
	if u.Role != api.RoleAdmin || u.Name != "alice" {
		t.Errorf("got first user %+v, want admin alice", u)
	}
	if _, err := e.svc.Setup(ctx, e.tokens[api.RoleAdmin], NewUser{Name: "mallory", Password: "a long passphrase"}); !errors.Is(err, api.ErrAlreadyExists) {
		t.Errorf("second setup: got %v, want AlreadyExists", err)
	}
	if need, _ := e.svc.SetupNeeded(ctx); need {
		t.Errorf("after setup: got setupNeeded=true, want false")
	}
	// The store holds an argon2id hash, never the password.
	resp, err := e.st.Client().Get(ctx, store.DefaultPrefix+"accounts/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var sawHash bool
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), "a long passphrase") {
			t.Errorf("key %s holds the password in clear: %s", kv.Key, kv.Value)
		}
		sawHash = sawHash || strings.Contains(string(kv.Value), `"passwordHash":"$argon2id$v=19$`)
	}
	if !sawHash {
		t.Errorf("got no argon2id hash in the store, want one for alice")
	}
}

func TestLoginSessionsAndTheSameAnswerForEveryFailure(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.Setup(ctx, e.tokens[api.RoleAdmin], NewUser{Name: "alice", Password: "a long passphrase"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateUser(ctx, NewUser{Name: "bob", Role: api.RoleViewer, Password: "bobs passphrase"}, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateUser(ctx, NewUser{Name: "bob", Role: api.RoleViewer, Password: "bobs passphrase"}, "alice"); !errors.Is(err, api.ErrAlreadyExists) {
		t.Errorf("create bob twice: got %v, want AlreadyExists", err)
	}
	// Each failure comes from its own address so no limit interferes.
	var messages []string
	for i, tc := range []struct{ name, user, password string }{
		{"unknown user", "carol", "a long passphrase"},
		{"wrong password", "alice", "not her passphrase"},
	} {
		_, _, err := e.svc.Login(ctx, tc.user, tc.password, "192.0.2."+string(rune('1'+i)))
		if !errors.Is(err, api.ErrUnauthorized) {
			t.Fatalf("%s: got %v, want Unauthorized", tc.name, err)
		}
		messages = append(messages, err.Error())
	}
	disabled := true
	if _, err := e.svc.UpdateUser(ctx, "bob", UserUpdate{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.svc.Login(ctx, "bob", "bobs passphrase", "192.0.2.9")
	if err == nil {
		t.Fatalf("disabled user: got a session, want Unauthorized")
	}
	messages = append(messages, err.Error())
	for _, m := range messages[1:] {
		if m != messages[0] {
			t.Errorf("got failure messages %q, want one message for all", messages)
		}
	}

	id, sess, err := e.svc.Login(ctx, "alice", "a long passphrase", "192.0.2.10")
	if err != nil {
		t.Fatalf("login: got %v, want a session", err)
	}
	id2, _, err := e.svc.Login(ctx, "alice", "a long passphrase", "192.0.2.10")
	if err != nil || id2 == id {
		t.Fatalf("second login: got id equal=%v err=%v, want a new id", id2 == id, err)
	}
	got, err := e.svc.Authenticate(ctx, id)
	if err != nil || got.User != "alice" || got.Role != api.RoleAdmin || got.CSRF != sess.CSRF {
		t.Fatalf("authenticate: got %+v, %v; want alice as admin with the login's CSRF token", got, err)
	}
	// The store keys sessions by a hash of the id, never the id.
	resp, _ := e.st.Client().Get(ctx, store.DefaultPrefix+"accounts/sessions/", clientv3.WithPrefix())
	if len(resp.Kvs) != 2 {
		t.Fatalf("got %d stored sessions, want 2", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), id) || strings.Contains(string(kv.Value), id) {
			t.Errorf("the session id is stored in %s", kv.Key)
		}
		if kv.Lease == 0 {
			t.Errorf("session %s has no lease, want one so etcd removes it at its end", kv.Key)
		}
	}
	// Sliding expiry: used every 11 h, the session lives past 12 h.
	e.clk.Add(11 * time.Hour)
	if _, err := e.svc.Authenticate(ctx, id); err != nil {
		t.Fatalf("after 11 h: got %v, want the session alive", err)
	}
	e.clk.Add(11 * time.Hour)
	if _, err := e.svc.Authenticate(ctx, id); err != nil {
		t.Fatalf("22 h after login, 11 h idle: got %v, want the session alive", err)
	}
	if _, err := e.svc.Authenticate(ctx, id2); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("22 h idle: got %v, want Unauthorized", err)
	}
	// A role change applies to a live session.
	viewer := api.RoleViewer
	if _, err := e.svc.UpdateUser(ctx, "alice", UserUpdate{Role: &viewer}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.Authenticate(ctx, id); got.Role != api.RoleViewer {
		t.Errorf("after a role change: got role %q, want viewer", got.Role)
	}
	if err := e.svc.Logout(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, id); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("after logout: got %v, want Unauthorized", err)
	}
	for _, bad := range []string{"", "nonsense", strings.Repeat("x", 500)} {
		if _, err := e.svc.Authenticate(ctx, bad); !errors.Is(err, api.ErrUnauthorized) {
			t.Errorf("session id %.10q: got %v, want Unauthorized", bad, err)
		}
	}
}

func TestLoginIsRateLimitedPerAccountAndPerAddress(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.Setup(ctx, e.tokens[api.RoleAdmin], NewUser{Name: "alice", Password: "a long passphrase"}); err != nil {
		t.Fatal(err)
	}
	// Per account: five wrong guesses from five addresses, then even the
	// right password is refused until a token is back.
	for i := range 5 {
		if _, _, err := e.svc.Login(ctx, "alice", "guess", "198.51.100."+string(rune('1'+i))); !errors.Is(err, api.ErrUnauthorized) {
			t.Fatalf("guess %d: got %v, want Unauthorized", i+1, err)
		}
	}
	_, _, err := e.svc.Login(ctx, "alice", "a long passphrase", "198.51.100.99")
	var rl *RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter <= 0 || rl.RetryAfter > 12*time.Second {
		t.Fatalf("sixth attempt on one account: got %v, want rate limited for at most 12 s", err)
	}
	e.clk.Add(rl.RetryAfter)
	if _, _, err := e.svc.Login(ctx, "alice", "a long passphrase", "198.51.100.99"); err != nil {
		t.Fatalf("after Retry-After: got %v, want a session", err)
	}
	// Per address: 20 names from one address, then the address waits.
	for i := range 20 {
		e.svc.Login(ctx, "nobody-"+string(rune('a'+i)), "guess", "203.0.113.7")
	}
	if _, _, err := e.svc.Login(ctx, "someone-else", "guess", "203.0.113.7"); !errors.As(err, &rl) {
		t.Errorf("21st attempt from one address: got %v, want rate limited", err)
	}
}

func TestMintTokenCarriesTheUsersRoleAndExpires(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.Setup(ctx, e.tokens[api.RoleAdmin], NewUser{Name: "alice", Password: "a long passphrase"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateUser(ctx, NewUser{Name: "ed", Role: api.RoleEditor, Password: "eds passphrase"}, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.MintToken(ctx, "ed", "wrong passphrase", "127.0.0.1", 0); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("wrong password: got %v, want Unauthorized", err)
	}
	bearer, tok, err := e.svc.MintToken(ctx, "ed", "eds passphrase", "127.0.0.1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := credential.Authenticate(ctx, e.st.Get, "Bearer "+bearer, e.clk.Now())
	if err != nil || p.Role != api.RoleEditor {
		t.Fatalf("minted token: got %+v, %v; want an editor token", p, err)
	}
	if want := e.clk.Now().Add(time.Hour); !tok.Spec.ExpiresAt.Equal(want) {
		t.Errorf("got expiry %v, want %v", tok.Spec.ExpiresAt, want)
	}
	if _, err := credential.Authenticate(ctx, e.st.Get, "Bearer "+bearer, e.clk.Now().Add(2*time.Hour)); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("after its expiry: got %v, want Unauthorized", err)
	}
}
