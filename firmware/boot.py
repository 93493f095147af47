# Runs first after every reset. The lock output goes to its de-energized level before anything
# else can run or fail: a solenoid lock here is fail-secure, so "off" is "locked".
import board

board.lock_safe()
