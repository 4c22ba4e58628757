package ctl

import (
	"reflect"
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

func TestCertificateTable(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	notAfter, renew := now.Add(90*24*time.Hour), now.Add(60*24*time.Hour)
	k, _ := api.LookupKind("certs")
	tests := []struct {
		name string
		cert *api.Certificate
		want []string
	}{
		{"issued", &api.Certificate{Metadata: api.ObjectMeta{Name: "web", CreationTimestamp: now.Add(-time.Hour)},
			Spec:   api.CertificateSpec{Hostname: "web.example.com"},
			Status: api.CertificateStatus{State: api.CertificateIssued, Serial: "4a2b", NotAfter: &notAfter, RenewAfter: &renew}},
			[]string{"web", "web.example.com", "Issued", "2027-02-21T12:00:00Z", "4a2b", "1h"}},
		{"pending", &api.Certificate{Metadata: api.ObjectMeta{Name: "new", CreationTimestamp: now},
			Spec: api.CertificateSpec{Hostname: "new.example.com"}},
			[]string{"new", "new.example.com", "<none>", "<none>", "<none>", "0s"}},
	}
	if got := tableHeader(k, false); len(got) != len(tests[0].want) {
		t.Fatalf("header: got %v, want %d columns", got, len(tests[0].want))
	}
	for _, tt := range tests {
		if got := tableRow(tt.cert, tt.cert.Metadata.Name, false, now); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
		if h, r := tableHeader(k, true), tableRow(tt.cert, tt.cert.Metadata.Name, true, now); len(h) != len(r) {
			t.Errorf("%s wide: got %d cells for %d columns", tt.name, len(r), len(h))
		}
	}
}
