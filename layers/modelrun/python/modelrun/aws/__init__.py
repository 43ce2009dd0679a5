"""Adapters to AWS services that carry no domain of their own: S3 image reads (``s3``), DynamoDB number conversion
and conditional writes (``dynamo``), and botocore error codes read in one place (``errors``).
"""
