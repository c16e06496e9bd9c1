package disk

import "context"

// Resizer changes the size of a target (a file grows sparse, a page blob is
// resized). Fallback: a target smaller than its source is refused.
type Resizer interface {
	Resize(ctx context.Context, size int64) error
}
