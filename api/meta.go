package api

import (
	"time"
)

// Group, Version and APIVersion name the API every resource belongs to.
const (
	Group      = "kakuremichi.io"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// TypeMeta says what an object is. Both fields are required in manifests.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// ObjectMeta is the metadata every stored object carries. Fields marked
// "system" are set by Control and ignored (or checked) when a client sends
// them.
type ObjectMeta struct {
	// Name is the object's unique name within its kind (and namespace).
	Name string `json:"name"`
	// Namespace is reserved for organisations; empty means the default one.
	Namespace string `json:"namespace,omitempty"`
	// UID is system: unique for the lifetime of this object, never reused.
	UID string `json:"uid,omitempty"`
	// Labels are identifying key/value pairs matched by label selectors.
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are free-form key/value pairs for tools and people.
	Annotations map[string]string `json:"annotations,omitempty"`
	// ResourceVersion is system: the etcd revision at which the object was
	// last written. An update carrying a stale one fails with a conflict;
	// empty on update means "whatever is stored" (no precondition).
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation is system: it moves by one each time spec changes.
	Generation int64 `json:"generation,omitempty"`
	// CreationTimestamp is system: when the object was created.
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
	// DeletionTimestamp is system: set when a delete was asked for while
	// finalizers remained; the object goes once the finalizers are empty.
	DeletionTimestamp *time.Time `json:"deletionTimestamp,omitempty"`
	// Finalizers hold the object back from deletion until each is removed.
	Finalizers []string `json:"finalizers,omitempty"`
	// OwnerReferences name the objects this one depends on: when every
	// owner is gone, the object is garbage collected.
	OwnerReferences []OwnerReference `json:"ownerReferences,omitempty"`
}

// OwnerReference points at an object that owns this one.
type OwnerReference struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	// UID pins the owner's incarnation: an owner deleted and re-created
	// under the same name does not adopt its predecessor's dependents.
	UID string `json:"uid"`
	// Controller marks the one owner that manages this object.
	Controller bool `json:"controller,omitempty"`
}

// Object is implemented by every resource kind.
type Object interface {
	// GetTypeMeta returns the object's apiVersion and kind, for setting too.
	GetTypeMeta() *TypeMeta
	// GetMeta returns the object's metadata, for reading and writing.
	GetMeta() *ObjectMeta
	// GetStatus returns the common part of the object's status.
	GetStatus() *CommonStatus
	// Default fills spec fields a person may leave out.
	Default()
	// ValidateSpec checks spec; metadata is checked by Validate.
	ValidateSpec() ErrorList
}

// CommonStatus is embedded in every kind's status.
type CommonStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions are the latest observations of the object's state.
	Conditions []Condition `json:"conditions,omitempty"`
}

// Key identifies an object by kind and name, for queues and caches.
type Key struct {
	Kind      string
	Namespace string
	Name      string
}

// String returns "kind/name" or "kind/namespace/name".
func (k Key) String() string {
	if k.Namespace == "" {
		return k.Kind + "/" + k.Name
	}
	return k.Kind + "/" + k.Namespace + "/" + k.Name
}

// KeyOf returns the key of obj.
func KeyOf(obj Object) Key {
	m := obj.GetMeta()
	return Key{Kind: obj.GetTypeMeta().Kind, Namespace: m.Namespace, Name: m.Name}
}
