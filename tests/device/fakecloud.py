# The keypad flows' view of the cloud link, for device tests of Entry: records what would be sent.


class Cloud:
    def __init__(self, up=True):
        self.up = up
        self.sent = []

    def available(self):
        return self.up

    def reachable(self, now):
        return self.available()

    def phone(self, e164, now):
        self.sent.append(("phone", e164))

    def code(self, digits, now):
        self.sent.append(("code", digits))

    def help(self, now):
        self.sent.append(("help",))
