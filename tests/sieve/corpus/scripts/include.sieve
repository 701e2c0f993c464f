require ["include", "fileinto"];
include :personal "always_allow";
include :global "spam_tests";
include :personal "spam_tests";
include :personal "mailing_lists";
include :once "mailing_lists";
include :optional "no_such_script";
fileinto "after-includes";
