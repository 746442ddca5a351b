"""What the tests share: processes, servers, receivers, decoders and the jobs they make."""
