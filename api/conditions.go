package api

import "time"

// ConditionStatus is True, False or Unknown.
type ConditionStatus string

// The three condition statuses.
const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// Condition is one observation about an object, as in Kubernetes.
type Condition struct {
	// Type names the aspect observed, e.g. Ready.
	Type string `json:"type"`
	// Status is True, False or Unknown.
	Status ConditionStatus `json:"status"`
	// ObservedGeneration is the spec generation this was observed at.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// LastTransitionTime moves only when Status changes.
	LastTransitionTime time.Time `json:"lastTransitionTime"`
	// Reason is a CamelCase word a program can match on.
	Reason string `json:"reason"`
	// Message is a sentence for a person.
	Message string `json:"message,omitempty"`
}

// Condition types shared by every kind.
const (
	// ConditionReady sums up whether the object does what its spec asks.
	ConditionReady = "Ready"
)

// FindCondition returns the condition of the given type, or nil.
func FindCondition(conds []Condition, typ string) *Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// IsConditionTrue reports whether the condition of the given type is True.
func IsConditionTrue(conds []Condition, typ string) bool {
	c := FindCondition(conds, typ)
	return c != nil && c.Status == ConditionTrue
}

// SetCondition adds or updates c in conds and reports whether anything
// changed. LastTransitionTime is set to now only when the status flips (or
// the condition is new), so rewriting an unchanged condition is a no-op and
// callers can skip the write.
func SetCondition(conds *[]Condition, c Condition, now time.Time) bool {
	existing := FindCondition(*conds, c.Type)
	if existing == nil {
		if c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = now.UTC().Truncate(time.Second)
		}
		*conds = append(*conds, c)
		return true
	}
	changed := false
	if existing.Status != c.Status {
		existing.Status = c.Status
		existing.LastTransitionTime = now.UTC().Truncate(time.Second)
		if !c.LastTransitionTime.IsZero() {
			existing.LastTransitionTime = c.LastTransitionTime
		}
		changed = true
	}
	if existing.Reason != c.Reason {
		existing.Reason = c.Reason
		changed = true
	}
	if existing.Message != c.Message {
		existing.Message = c.Message
		changed = true
	}
	if existing.ObservedGeneration != c.ObservedGeneration {
		existing.ObservedGeneration = c.ObservedGeneration
		changed = true
	}
	return changed
}

// RemoveCondition deletes the condition of the given type and reports
// whether it was there.
func RemoveCondition(conds *[]Condition, typ string) bool {
	for i := range *conds {
		if (*conds)[i].Type == typ {
			*conds = append((*conds)[:i], (*conds)[i+1:]...)
			return true
		}
	}
	return false
}
