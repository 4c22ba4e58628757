package accounts

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

func TestRegistrationIsByInviteUnlessOpened(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pw := "a long passphrase"
	if _, err := e.svc.Register(ctx, "", NewUser{Name: "early", Password: pw}, "192.0.2.1"); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("sign-up before setup: got %v, want Forbidden", err)
	}
	if _, err := e.svc.Setup(ctx, e.tokens[api.RoleAdmin], NewUser{Name: "alice", Password: pw}); err != nil {
		t.Fatal(err)
	}
	if st, err := e.svc.Settings(ctx); err != nil || st.OpenRegistration {
		t.Fatalf("default settings: got %+v, %v; want registration closed", st, err)
	}
	if _, err := e.svc.Register(ctx, "", NewUser{Name: "walkin", Password: pw}, "192.0.2.1"); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("sign-up without invite while closed: got %v, want Forbidden", err)
	}

	code, inv, err := e.svc.CreateInvite(ctx, api.RoleEditor, 0, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(code, InvitePrefix+inv.ID+".") || !inv.ExpiresAt.Equal(e.clk.Now().Add(DefaultInviteTTL)) {
		t.Errorf("got code %q and invite %+v, want kki_<id>.<secret> expiring in 7 days", code, inv)
	}
	if list, _ := e.svc.ListInvites(ctx); len(list) != 1 || list[0].ID != inv.ID {
		t.Errorf("got invites %+v, want the one made", list)
	}
	for _, bad := range []string{"kki_" + inv.ID + ".wrong", "kki_0000000000000000.x", "nonsense", code + "x"} {
		if _, err := e.svc.Register(ctx, bad, NewUser{Name: "eve", Password: pw}, "192.0.2.2"); !errors.Is(err, api.ErrForbidden) {
			t.Errorf("sign-up with invite %q: got %v, want Forbidden", bad, err)
		}
	}
	// A validation error leaves the invite usable.
	if _, err := e.svc.Register(ctx, code, NewUser{Name: "ed", Password: "short"}, "192.0.2.3"); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("short password: got %v, want Invalid", err)
	}
	// Two sign-ups racing with one invite make one account.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, name := range []string{"ed", "eddie"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.svc.Register(ctx, code, NewUser{Name: name, Role: api.RoleAdmin, Password: pw}, "192.0.2.4")
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("two sign-ups with one invite: got %v and %v, want exactly one success", errs[0], errs[1])
	}
	users, _ := e.svc.ListUsers(ctx)
	var made []User
	for _, u := range users {
		if u.Name != "alice" {
			made = append(made, u)
		}
	}
	if len(made) != 1 || made[0].Role != api.RoleEditor || made[0].CreatedBy != "invite of alice" {
		t.Errorf("got users %+v, want one editor invited by alice (the role asked for is ignored)", made)
	}
	if list, _ := e.svc.ListInvites(ctx); len(list) != 0 {
		t.Errorf("after use: got invites %+v, want none", list)
	}

	// Expired and revoked invites do not work.
	code2, inv2, _ := e.svc.CreateInvite(ctx, api.RoleViewer, time.Hour, "alice")
	e.clk.Add(2 * time.Hour)
	if _, err := e.svc.CheckInvite(ctx, code2); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("expired invite: got %v, want Forbidden", err)
	}
	if list, _ := e.svc.ListInvites(ctx); len(list) != 0 {
		t.Errorf("got expired invite %s listed", inv2.ID)
	}
	code3, inv3, _ := e.svc.CreateInvite(ctx, api.RoleViewer, time.Hour, "alice")
	if err := e.svc.RevokeInvite(ctx, inv3.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CheckInvite(ctx, code3); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("revoked invite: got %v, want Forbidden", err)
	}
	if err := e.svc.RevokeInvite(ctx, inv3.ID); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("revoke twice: got %v, want NotFound", err)
	}
	if _, _, err := e.svc.CreateInvite(ctx, "root", 365*24*time.Hour, "alice"); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("bad invite: got %v, want Invalid", err)
	}

	// Opened, anyone signs up as a viewer.
	if _, err := e.svc.SetOpenRegistration(ctx, true, "alice"); err != nil {
		t.Fatal(err)
	}
	u, err := e.svc.Register(ctx, "", NewUser{Name: "walkin", Role: api.RoleAdmin, Password: pw}, "192.0.2.5")
	if err != nil || u.Role != api.RoleViewer || u.CreatedBy != "sign-up" {
		t.Errorf("open sign-up: got %+v, %v; want a viewer", u, err)
	}
	if _, err := e.svc.Register(ctx, "", NewUser{Name: "walkin", Password: pw}, "192.0.2.5"); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("a taken name: got %v, want Invalid on the name", err)
	}
}

func TestChangePasswordEndsOtherSessions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pw, pw2 := "a long passphrase", "another passphrase"
	if _, err := e.svc.Setup(ctx, e.tokens[api.RoleAdmin], NewUser{Name: "alice", Password: pw}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateUser(ctx, NewUser{Name: "bob", Role: api.RoleViewer, Password: pw}, "alice"); err != nil {
		t.Fatal(err)
	}
	here, _, _ := e.svc.Login(ctx, "alice", pw, "192.0.2.1")
	there, _, _ := e.svc.Login(ctx, "alice", pw, "192.0.2.2")
	bobs, _, _ := e.svc.Login(ctx, "bob", pw, "192.0.2.3")
	var fe api.ErrorList
	if err := e.svc.ChangePassword(ctx, "alice", "wrong guess", pw2, "192.0.2.1", here); !errors.As(err, &fe) || fe[0].Field != "current" {
		t.Errorf("wrong current password: got %v, want an error on the field current", err)
	}
	if err := e.svc.ChangePassword(ctx, "alice", pw, "short", "192.0.2.1", here); !errors.As(err, &fe) || fe[0].Field != "password" {
		t.Errorf("short new password: got %v, want an error on the field password", err)
	}
	if err := e.svc.ChangePassword(ctx, "alice", pw, pw2, "192.0.2.1", here); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, here); err != nil {
		t.Errorf("the session that changed the password: got %v, want it kept", err)
	}
	if _, err := e.svc.Authenticate(ctx, there); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("alice's other session: got %v, want it ended", err)
	}
	if _, err := e.svc.Authenticate(ctx, bobs); err != nil {
		t.Errorf("bob's session: got %v, want it untouched", err)
	}
	if _, _, err := e.svc.Login(ctx, "alice", pw2, "192.0.2.4"); err != nil {
		t.Errorf("login with the new password: %v", err)
	}
	// An admin's reset ends every session of the user.
	if _, err := e.svc.UpdateUser(ctx, "bob", UserUpdate{Password: &pw2}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, bobs); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("bob's session after a reset: got %v, want it ended", err)
	}
}
