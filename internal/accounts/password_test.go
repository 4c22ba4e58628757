package accounts

import (
	"strings"
	"testing"
	"time"
)

func TestPasswordHashing(t *testing.T) {
	start := time.Now()
	h, err := HashPassword("correct horse battery", DefaultHashParams)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one argon2id hash with the default parameters took %v", time.Since(start))
	if !strings.HasPrefix(h, "$argon2id$v=19$m=47104,t=1,p=1$") {
		t.Errorf("got hash %q, want an argon2id PHC string with the default parameters", h)
	}
	h2, _ := HashPassword("correct horse battery", DefaultHashParams)
	if h == h2 {
		t.Errorf("got the same hash twice, want a fresh salt each time")
	}
	parts := strings.Split(h, "$")
	for _, tc := range []struct {
		name, hash, password string
		want                 bool
		wantErr              bool
	}{
		{"right password", h, "correct horse battery", true, false},
		{"wrong password", h, "correct horse batterz", false, false},
		{"empty password", h, "", false, false},
		{"not a hash", "sha256:abc", "x", false, true},
		{"argon2i", strings.Replace(h, "argon2id", "argon2i", 1), "correct horse battery", false, true},
		{"huge memory", strings.Join(append(append([]string{}, parts[:3]...), "m=4194304,t=1,p=1", parts[4], parts[5]), "$"), "x", false, true},
		{"bad salt", strings.Join(append(append([]string{}, parts[:4]...), "!!", parts[5]), "$"), "x", false, true},
	} {
		got, err := VerifyPassword(tc.hash, tc.password)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: got %v, err %v; want %v, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(6, 3, 10) // one token every 10 s
	for i := range 3 {
		if ok, _ := l.take("a", now); !ok {
			t.Fatalf("attempt %d within the burst: got refused, want allowed", i+1)
		}
	}
	ok, wait := l.take("a", now)
	if ok || wait != 10*time.Second {
		t.Fatalf("attempt beyond the burst: got ok=%v wait=%v, want refused with 10s", ok, wait)
	}
	if ok, _ := l.take("b", now); !ok {
		t.Errorf("another key: got refused, want its own bucket")
	}
	if ok, _ := l.take("a", now.Add(5*time.Second)); ok {
		t.Errorf("after 5 s: got allowed, want refused")
	}
	// The refused attempt spent nothing; 10 s after the last refill one
	// token is back.
	if ok, _ := l.take("a", now.Add(10*time.Second)); !ok {
		t.Errorf("after 10 s: got refused, want one token back")
	}
	// The map stays bounded under a flood of keys.
	for i := range 100 {
		l.take(string(rune('A'+i)), now)
	}
	if n := len(l.buckets); n > 10 {
		t.Errorf("got %d buckets, want at most 10", n)
	}
}
