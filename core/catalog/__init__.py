"""What can be asked of fal: prompt options, endpoints and their schemas, payloads. A new endpoint touches only this package."""
