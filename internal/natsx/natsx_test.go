package natsx

import (
	"strings"
	"testing"
)

func TestConnectErrorsCarryNoPassword(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"nats://svc:s3cret@host:42x22",
		"nats://svc:s3cr/et?x@127.0.0.1:1",
		"nats://127.0.0.1:1,nats://svc:s3cret@127.0.0.1:2",
	} {
		_, err := Connect(url, "t", nil)
		if err == nil {
			t.Fatalf("%s: connected", url)
		}
		if strings.Contains(err.Error(), "s3cr") {
			t.Fatalf("the password is in the error: %v", err)
		}
	}
}
