package install

// HTTPStatus is the HTTP status POST /api/v1/install answers for an error
// of Start, for other endpoints that install through Start.
func HTTPStatus(err error) int { return statusOf(err) }
