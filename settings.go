package flashpipe

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
)

// SettingMaxCost is the manifest setting that caps what a batch may spend on the API,
// in USD (a decimal number above 0, e.g. "5" or "12.50"). At the cap the batch pauses,
// its items held, until the cap is raised (`flashpipe cap set`).
const SettingMaxCost = "max_cost"

// MaxCostLimit is the largest max_cost accepted, in USD.
const MaxCostLimit = 1e9

// maxCostPattern is a plain decimal number (the manifest schema's pattern).
var maxCostPattern = regexp.MustCompile(`^[0-9]{1,10}(\.[0-9]{1,9})?$`)

// ParseMaxCost reads a max_cost setting: a plain decimal number of USD (digits, an
// optional point and up to 9 decimals) above 0 and at most MaxCostLimit.
func ParseMaxCost(s string) (float64, error) {
	if !maxCostPattern.MatchString(s) {
		return 0, fmt.Errorf("%s %q: want a number of USD, e.g. 5 or 12.50", SettingMaxCost, s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s %q: want a number of USD, e.g. 5 or 12.50", SettingMaxCost, s)
	}
	if v <= 0 || v > MaxCostLimit {
		return 0, fmt.Errorf("%s %q: want more than 0 and at most %g USD", SettingMaxCost, s, MaxCostLimit)
	}
	return v, nil
}

// ValidateSettings checks the settings of a batch that flashpipe reads (max_cost);
// other keys are kept and ignored. The error names the setting.
func ValidateSettings(settings map[string]string) error {
	if err := ValidateAPIMode(settings[SettingAPIMode]); err != nil {
		return fmt.Errorf("settings.%s: %w", SettingAPIMode, err)
	}
	if v, ok := settings[SettingMaxCost]; ok {
		if _, err := ParseMaxCost(v); err != nil {
			return fmt.Errorf("settings: %w", err)
		}
	}
	return nil
}

// MaxCost returns the batch's max_cost setting in USD, and whether it has one (a
// manifest that passed Validate).
func (m Manifest) MaxCost() (float64, bool) {
	s, ok := m.Settings[SettingMaxCost]
	if !ok {
		return 0, false
	}
	v, err := ParseMaxCost(s)
	return v, err == nil
}
