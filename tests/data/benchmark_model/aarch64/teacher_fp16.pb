2fCð‡`CÍ<‹C% «@-åÐeC5ºéaC=¾ŸhCE‰AçAM\¯qCUíÎeC,ìa"C­Ñ?d
%åŸP=