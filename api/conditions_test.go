package api_test

import (
	"testing"
	"time"

	"github.com/kakuremichi/kakuremichi/api"
)

func TestSetConditionMovesTransitionTimeOnlyOnFlip(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var conds []api.Condition
	if !api.SetCondition(&conds, api.Condition{Type: "Ready", Status: api.ConditionFalse, Reason: "A"}, t0) {
		t.Fatal("got unchanged, want changed for a new condition")
	}
	if api.SetCondition(&conds, api.Condition{Type: "Ready", Status: api.ConditionFalse, Reason: "A"}, t0.Add(time.Hour)) {
		t.Fatal("got changed, want unchanged for the same condition")
	}
	if !api.SetCondition(&conds, api.Condition{Type: "Ready", Status: api.ConditionFalse, Reason: "B"}, t0.Add(2*time.Hour)) {
		t.Fatal("got unchanged, want changed for a new reason")
	}
	if got := conds[0].LastTransitionTime; !got.Equal(t0) {
		t.Fatalf("got lastTransitionTime %v after a reason change, want %v", got, t0)
	}
	t3 := t0.Add(3 * time.Hour)
	api.SetCondition(&conds, api.Condition{Type: "Ready", Status: api.ConditionTrue, Reason: "Ready"}, t3)
	if got := conds[0].LastTransitionTime; !got.Equal(t3) {
		t.Fatalf("got lastTransitionTime %v after a flip, want %v", got, t3)
	}
	if !api.IsConditionTrue(conds, "Ready") || len(conds) != 1 {
		t.Fatalf("got %+v, want one True Ready condition", conds)
	}
}

func TestSelector(t *testing.T) {
	tests := []struct {
		sel    string
		labels map[string]string
		want   bool
	}{
		{"", nil, true},
		{"app=web", map[string]string{"app": "web"}, true},
		{"app==web", map[string]string{"app": "db"}, false},
		{"app!=web", map[string]string{"app": "db"}, true},
		{"app!=web", nil, true},
		{"app", map[string]string{"app": ""}, true},
		{"!app", map[string]string{"app": "x"}, false},
		{"app=web,tier=front", map[string]string{"app": "web"}, false},
		{"example.com/team=a", map[string]string{"example.com/team": "a"}, true},
	}
	for _, tt := range tests {
		s, err := api.ParseSelector(tt.sel)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", tt.sel, err)
		}
		if got := s.Matches(tt.labels); got != tt.want {
			t.Errorf("%q matches %v: got %v, want %v", tt.sel, tt.labels, got, tt.want)
		}
	}
	for _, bad := range []string{"a=b c", "=x", "a=-b-"} {
		if _, err := api.ParseSelector(bad); err == nil {
			t.Errorf("ParseSelector(%q): got no error, want one", bad)
		}
	}
}
