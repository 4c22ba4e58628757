// Package certs is Control's side of certificates: the internal CA kept in
// the store, the controller that holds one certificate per hostname of an
// enabled http tunnel (wildcards included) and for Control's own public
// name (issuing, renewing in the last third of its life, and removing it
// with its tunnel; Control's own is kept under names of its own, never
// delivered to gateways, and no tunnel can claim that name), the ACME issuer with its challenge solvers (HTTP-01
// and TLS-ALPN-01 answered by every gateway, DNS-01 through a DNSProvider
// such as RFC2136, TLS-ALPN-01 of Control's own name answered by
// OwnCertificate), and the sources through which the watch bridge
// delivers certificates, keys and challenges to gateways.
//
// It imports api, reconcile and store, acmez for ACME, miekg/dns for DNS
// updates, and etcd's concurrency package for the lock that keeps Control
// replicas from issuing twice; never gateway or agent code.
package certs
