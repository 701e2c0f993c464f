require ["include", "fileinto"];
fileinto "before";
include "no_such_script";
