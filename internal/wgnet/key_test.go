package wgnet

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/kakuremichi/kakuremichi/api"
)

// RFC 7748 section 6.1, Alice's key pair.
const (
	rfcPrivateHex = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
	rfcPublicHex  = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
)

func hexToBase64(t *testing.T, h string) string {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestPublicKeyKnownAnswer(t *testing.T) {
	priv, err := ParsePrivateKey(hexToBase64(t, rfcPrivateHex))
	if err != nil {
		t.Fatal(err)
	}
	if got := priv.PublicKey().hex(); got != rfcPublicHex {
		t.Errorf("public key: got %s, want %s", got, rfcPublicHex)
	}
}

func TestGeneratePrivateKey(t *testing.T) {
	a, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a.PublicKey() == b.PublicKey() {
		t.Errorf("two generated keys are equal")
	}
	if a.b[0]&7 != 0 || a.b[31]&128 != 0 || a.b[31]&64 == 0 {
		t.Errorf("generated key not clamped: first byte %08b, last %08b", a.b[0], a.b[31])
	}
	back, err := ParsePrivateKey(a.Base64())
	if err != nil || back != a {
		t.Errorf("round trip through Base64: got %v (err %v), want the same key", back == a, err)
	}
}

func TestParseKeys(t *testing.T) {
	valid := hexToBase64(t, rfcPublicHex)
	zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		in          string
		wantPublic  bool
		wantPrivate bool
	}{
		{valid, true, true},
		{zero, true, false}, // a zero private key is never usable
		{"", false, false},
		{"not base64!", false, false},
		{base64.StdEncoding.EncodeToString(make([]byte, 31)), false, false},
		{valid[:43], false, false}, // padding missing
	}
	for _, tt := range tests {
		pub, err := ParseKey(tt.in)
		if (err == nil) != tt.wantPublic {
			t.Errorf("ParseKey(%q): got err %v, want success %v", tt.in, err, tt.wantPublic)
		}
		if err != nil && !errors.Is(err, api.ErrInvalid) {
			t.Errorf("ParseKey(%q): got %v, want errors.Is api.ErrInvalid", tt.in, err)
		}
		if err == nil && pub.String() != tt.in {
			t.Errorf("ParseKey(%q).String(): got %q, want the input", tt.in, pub.String())
		}
		_, err = ParsePrivateKey(tt.in)
		if (err == nil) != tt.wantPrivate {
			t.Errorf("ParsePrivateKey(%q): got err %v, want success %v", tt.in, err, tt.wantPrivate)
		}
		if err != nil && !errors.Is(err, api.ErrInvalid) {
			t.Errorf("ParsePrivateKey(%q): got %v, want errors.Is api.ErrInvalid", tt.in, err)
		}
		if err != nil && tt.in != "" && strings.Contains(err.Error(), tt.in) {
			t.Errorf("ParsePrivateKey(%q): error %q repeats the input", tt.in, err)
		}
	}
}

func TestKeyText(t *testing.T) {
	priv, _ := GeneratePrivateKey()
	pub := priv.PublicKey()
	b, err := json.Marshal(map[string]Key{"k": pub})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"k":"` + pub.String() + `"}`; string(b) != want {
		t.Errorf("json: got %s, want %s", b, want)
	}
	var back map[string]Key
	if err := json.Unmarshal(b, &back); err != nil || back["k"] != pub {
		t.Errorf("json round trip: got %v (err %v), want %v", back["k"], err, pub)
	}
	if err := json.Unmarshal([]byte(`{"k":"short"}`), &back); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("json bad key: got %v, want api.ErrInvalid", err)
	}
	if s := pub.Short(); len([]rune(s)) != 9 || !strings.HasPrefix(pub.String(), s[:4]) {
		t.Errorf("Short: got %q, want 4 chars … 4 chars of %s", s, pub)
	}
}

// TestPrivateKeyRedacted: however a private key is printed, logged or
// marshalled, its bytes do not come out.
func TestPrivateKeyRedacted(t *testing.T) {
	priv, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{priv.Base64(), priv.hex(), strings.ToUpper(priv.hex()), fmt.Sprint(priv.b), fmt.Sprintf("%x", priv.b[:8])}
	type holder struct {
		Name string
		Key  PrivateKey
	}
	var jsonOut strings.Builder
	var textOut strings.Builder
	jl := slog.New(slog.NewJSONHandler(&jsonOut, nil))
	tl := slog.New(slog.NewTextHandler(&textOut, nil))
	jl.Info("k", "key", priv, "holder", holder{"n", priv})
	tl.Info("k", "key", priv, "holder", holder{"n", priv})
	js, err := json.Marshal(holder{"n", priv})
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"String": priv.String(), "%v": fmt.Sprintf("%v", priv), "%s": fmt.Sprintf("%s", priv),
		"%x": fmt.Sprintf("%x", priv), "%X": fmt.Sprintf("%X", priv), "%d": fmt.Sprintf("%d", priv),
		"%q": fmt.Sprintf("%q", priv), "%#v": fmt.Sprintf("%#v", priv), "%+v struct": fmt.Sprintf("%+v", holder{"n", priv}),
		"%#v struct": fmt.Sprintf("%#v", holder{"n", priv}), "slice": fmt.Sprint([]PrivateKey{priv}),
		"pointer": fmt.Sprintf("%v", &priv), "slog json": jsonOut.String(), "slog text": textOut.String(),
		"json.Marshal": string(js),
	}
	for name, out := range outputs {
		if s := containsAny(out, secrets...); s != "" {
			t.Errorf("%s: got %q, which contains the key (%q)", name, out, s)
		}
	}
	if got := fmt.Sprintf("%x", priv); got != redacted {
		t.Errorf("%%x: got %q, want %q", got, redacted)
	}
}
