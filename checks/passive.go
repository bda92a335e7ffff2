package checks

import (
	"errors"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("passive", func(types.Check) (Prober, error) {
		return nil, errors.New("passive check: nothing to probe; its results are submitted with 'bftmon submit' or POST /v1/observe")
	})
}

// IsPassive says whether c is a passive check: never probed, its results
// are submitted (Scheduler.Report).
func IsPassive(c types.Check) bool { return c.Kind == "passive" }
