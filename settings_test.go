package flashpipe_test

import (
	"strings"
	"testing"

	"github.com/flashpipe/flashpipe"
)

func TestMaxCostSetting(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"5", "0.01", "12.50", "1000000000"} {
		m := flashpipe.Manifest{BatchID: "b", Count: 1, Settings: map[string]string{flashpipe.SettingMaxCost: ok}}
		if err := m.Validate(); err != nil {
			t.Fatalf("max_cost %q refused: %v", ok, err)
		}
		if _, has := m.MaxCost(); !has {
			t.Fatalf("max_cost %q not read", ok)
		}
	}
	for _, bad := range []string{"", "0", "0.000", "-1", "1e3", "abc", "NaN", "Inf", " 5", "5.", "1000000000.5", "0.0000000001"} {
		m := flashpipe.Manifest{BatchID: "b", Count: 1, Settings: map[string]string{flashpipe.SettingMaxCost: bad}}
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "max_cost") {
			t.Fatalf("max_cost %q: %v", bad, err)
		}
	}
	if err := flashpipe.ValidateSettings(map[string]string{"other": "x"}); err != nil {
		t.Fatal(err)
	}
}
