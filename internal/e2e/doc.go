// Package e2e holds end-to-end tests that run the real binaries as
// processes on this machine: Control with its embedded etcd, killed and
// restarted; kakuremichictl against it. It has no non-test code besides
// this comment.
package e2e
