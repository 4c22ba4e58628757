package control

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kakuremichi/kakuremichi/api"
	"github.com/kakuremichi/kakuremichi/internal/certs"
	"github.com/kakuremichi/kakuremichi/store"
	"github.com/labstack/echo/v4"
)

// Certificate modes of Config.Certificates.
const (
	// CertificatesInternal: Control's own CA, kept in the store, signs a
	// certificate for every enabled http tunnel hostname; clients trust
	// its root (api.CAPath). The default: it needs no DNS and no public CA,
	// so it works on laptops, in tests and in closed networks.
	CertificatesInternal = "internal"
	// CertificatesOff: Control issues nothing; gateways serve their
	// --tls-cert-file or a self-signed certificate.
	CertificatesOff = "off"
)

func checkCertificateMode(mode string) (string, error) {
	switch mode {
	case "":
		return CertificatesInternal, nil
	case CertificatesInternal, CertificatesOff:
		return mode, nil
	case "acme":
		return "", errors.New("control: --certificates acme is not available in this version; use internal or off")
	}
	return "", fmt.Errorf("control: --certificates %q: use internal or off", mode)
}

// serveCA answers CAPath from the store.
func serveCA(st *store.Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		pem, err := certs.RootPEM(c.Request().Context(), st)
		if errors.Is(err, api.ErrNotFound) {
			st := api.StatusFromError(fmt.Errorf("%w: the internal CA does not exist (Control runs with --certificates off, or has not started it yet)", api.ErrNotFound))
			return c.JSON(st.Code, st)
		}
		if err != nil {
			st := api.StatusFromError(err)
			return c.JSON(st.Code, st)
		}
		return c.Blob(http.StatusOK, "application/x-pem-file", pem)
	}
}
