package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors shared by the store, the API server and clients. Check
// them with errors.Is; a *StatusError received from the API matches the
// sentinel of its reason.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict means the write carried a stale resourceVersion.
	ErrConflict = errors.New("conflict: the object has been modified; read it again and retry")
	// ErrInvalid means the object failed validation or decoding.
	ErrInvalid = errors.New("invalid")
	// ErrGone means a watch asked for a revision that has been compacted:
	// list again and watch from the list's revision.
	ErrGone = errors.New("resource version too old")
	// ErrNoSpace means the store reached its quota and refuses writes.
	ErrNoSpace = errors.New("store is out of space")
	// ErrUnauthorized means no valid credential was presented.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden means the credential lacks the right.
	ErrForbidden = errors.New("forbidden")
	// ErrBadRequest means the request itself was malformed.
	ErrBadRequest = errors.New("bad request")
	// ErrTooLarge means a body or manifest exceeded its size limit.
	ErrTooLarge = errors.New("request entity too large")
	// ErrUnavailable means the store could not be reached in time.
	ErrUnavailable = errors.New("service unavailable")
)

// StatusReason is a CamelCase word for why a request failed.
type StatusReason string

// The reasons an API error can carry, each with its HTTP code.
const (
	ReasonNotFound         StatusReason = "NotFound"              // 404
	ReasonAlreadyExists    StatusReason = "AlreadyExists"         // 409
	ReasonConflict         StatusReason = "Conflict"              // 409
	ReasonInvalid          StatusReason = "Invalid"               // 422
	ReasonExpired          StatusReason = "Expired"               // 410
	ReasonNoSpace          StatusReason = "NoSpace"               // 507
	ReasonUnauthorized     StatusReason = "Unauthorized"          // 401
	ReasonForbidden        StatusReason = "Forbidden"             // 403
	ReasonBadRequest       StatusReason = "BadRequest"            // 400
	ReasonTooLarge         StatusReason = "RequestEntityTooLarge" // 413
	ReasonUnavailable      StatusReason = "ServiceUnavailable"    // 503
	ReasonInternalError    StatusReason = "InternalError"         // 500
	ReasonMethodNotAllowed StatusReason = "MethodNotAllowed"      // 405
)

var reasonTable = []struct {
	reason StatusReason
	code   int
	err    error
}{
	{ReasonNotFound, http.StatusNotFound, ErrNotFound},
	{ReasonAlreadyExists, http.StatusConflict, ErrAlreadyExists},
	{ReasonConflict, http.StatusConflict, ErrConflict},
	{ReasonInvalid, http.StatusUnprocessableEntity, ErrInvalid},
	{ReasonExpired, http.StatusGone, ErrGone},
	{ReasonNoSpace, http.StatusInsufficientStorage, ErrNoSpace},
	{ReasonUnauthorized, http.StatusUnauthorized, ErrUnauthorized},
	{ReasonForbidden, http.StatusForbidden, ErrForbidden},
	{ReasonBadRequest, http.StatusBadRequest, ErrBadRequest},
	{ReasonTooLarge, http.StatusRequestEntityTooLarge, ErrTooLarge},
	{ReasonUnavailable, http.StatusServiceUnavailable, ErrUnavailable},
}

// Status is the JSON body of every API error.
type Status struct {
	TypeMeta `json:",inline"`
	// Code is the HTTP status code.
	Code int `json:"code"`
	// Reason is a word a program can match on.
	Reason StatusReason `json:"reason"`
	// Message is a sentence for a person.
	Message string `json:"message"`
	// Details name the object and, for Invalid, each failing field.
	Details *StatusDetails `json:"details,omitempty"`
}

// StatusDetails names the object a Status is about.
type StatusDetails struct {
	Kind   string       `json:"kind,omitempty"`
	Name   string       `json:"name,omitempty"`
	Causes []FieldError `json:"causes,omitempty"`
}

// StatusError is an error received from, or about to be sent by, the API.
type StatusError struct {
	Status Status
}

// Error returns the status message.
func (e *StatusError) Error() string { return e.Status.Message }

// Is makes errors.Is(err, ErrNotFound) and friends work on API errors.
func (e *StatusError) Is(target error) bool {
	for _, r := range reasonTable {
		if r.reason == e.Status.Reason {
			return r.err == target
		}
	}
	return false
}

// StatusFromError maps any error to the Status the API answers with.
// Errors that match no sentinel are internal errors.
func StatusFromError(err error) Status {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	st := Status{TypeMeta: TypeMeta{APIVersion: "v1", Kind: "Status"}, Message: err.Error()}
	var fe ErrorList
	if errors.As(err, &fe) {
		st.Code, st.Reason = http.StatusUnprocessableEntity, ReasonInvalid
		st.Details = &StatusDetails{Causes: fe}
		return st
	}
	for _, r := range reasonTable {
		if errors.Is(err, r.err) {
			st.Code, st.Reason = r.code, r.reason
			return st
		}
	}
	st.Code, st.Reason = http.StatusInternalServerError, ReasonInternalError
	return st
}

// NewStatusError builds an error with the reason's code and a message.
func NewStatusError(reason StatusReason, format string, args ...any) *StatusError {
	code := http.StatusInternalServerError
	for _, r := range reasonTable {
		if r.reason == reason {
			code = r.code
		}
	}
	if reason == ReasonMethodNotAllowed {
		code = http.StatusMethodNotAllowed
	}
	return &StatusError{Status: Status{
		TypeMeta: TypeMeta{APIVersion: "v1", Kind: "Status"},
		Code:     code, Reason: reason, Message: fmt.Sprintf(format, args...),
	}}
}

// FieldErrorType classifies a field error.
type FieldErrorType string

// Field error types.
const (
	FieldRequired     FieldErrorType = "FieldValueRequired"
	FieldInvalid      FieldErrorType = "FieldValueInvalid"
	FieldNotSupported FieldErrorType = "FieldValueNotSupported"
	FieldForbidden    FieldErrorType = "FieldValueForbidden"
	FieldTooLong      FieldErrorType = "FieldValueTooLong"
	FieldUnknown      FieldErrorType = "FieldValueUnknown"
	FieldDuplicate    FieldErrorType = "FieldValueDuplicate"
	FieldTypeInvalid  FieldErrorType = "FieldValueTypeInvalid"
)

// FieldError says what is wrong with one field, by its path
// ("spec.target").
type FieldError struct {
	Type   FieldErrorType `json:"reason"`
	Field  string         `json:"field"`
	Detail string         `json:"message"`
}

// Error returns "path: detail".
func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Detail
	}
	return e.Field + ": " + e.Detail
}

// ErrorList is a list of field errors; as an error it matches ErrInvalid.
type ErrorList []FieldError

// Error joins every field error with "; ".
func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// Is makes errors.Is(list, ErrInvalid) true.
func (l ErrorList) Is(target error) bool { return target == ErrInvalid }

// OrNil returns nil for an empty list, so a function can return it as an
// error without the typed-nil trap.
func (l ErrorList) OrNil() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// Prefix returns a copy of l with every field path prefixed by p.
func (l ErrorList) Prefix(p string) ErrorList {
	out := make(ErrorList, len(l))
	for i, e := range l {
		out[i] = e
		if e.Field == "" {
			out[i].Field = p
		} else {
			out[i].Field = p + "." + e.Field
		}
	}
	return out
}

func required(field, what string) FieldError {
	return FieldError{Type: FieldRequired, Field: field, Detail: "required: " + what}
}

func invalid(field, format string, args ...any) FieldError {
	return FieldError{Type: FieldInvalid, Field: field, Detail: fmt.Sprintf(format, args...)}
}
