"""The field order of AWS's extension's bodies (the Go SDK's output structs), for tests to pin."""

SECRET_ENTRY_KEYS = [
    *("ARN", "CreatedDate", "Name", "SecretBinary"),
    *("SecretString", "VersionId", "VersionStages"),
]
SECRET_KEYS = [*SECRET_ENTRY_KEYS, "ResultMetadata"]
PARAMETER_KEYS = [
    *("ARN", "DataType", "LastModifiedDate", "Name", "Selector"),
    *("SourceResult", "Type", "Value", "Version"),
]
