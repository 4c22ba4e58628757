package ctl

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// outPEM prints a certificate as PEM, for `get ca -o pem`.
const outPEM = "pem"

// getCA prints Control's internal CA root: as PEM with -o pem (to save
// and pass to curl --cacert), else a one-line summary.
func (c *cli) getCA(ctx context.Context, names []string, output string) error {
	if len(names) > 0 {
		return usagef("get ca takes no names")
	}
	if err := checkOutput(output, outTable, outPEM); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	data, err := cl.CA(ctx)
	if err != nil {
		return err
	}
	if output == outPEM {
		_, err := c.stdout.Write(data)
		return err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return fmt.Errorf("get ca: Control answered no PEM certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return fmt.Errorf("get ca: %w", err)
	}
	fmt.Fprintf(c.stdout, "SUBJECT\tNOT AFTER\n%s\t%s\n", cert.Subject, cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	return nil
}
