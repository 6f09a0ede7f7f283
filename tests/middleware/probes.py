"""A response body that tells whether a middleware read it early or dropped its ``close()``."""


class Body:
    def __init__(self):
        self.produced = 0
        self.closed = False

    def __iter__(self):
        for chunk in (b"one", b"two"):
            self.produced += 1
            yield chunk

    def close(self):
        self.closed = True
