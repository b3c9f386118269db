package deploy_test

import (
	"testing"

	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
