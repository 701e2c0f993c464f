require "vacation";
vacation :handle "one" "first";
if true { vacation :handle "two" "second"; }
